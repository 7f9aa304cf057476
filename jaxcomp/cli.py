"""`jaxcomp` command line: a thin layer that parses flags and dispatches to the methods and the harness.

  jaxcomp list [--configs_dir DIR]
  jaxcomp train --config configs/<method>.py[:variant] --workdir DIR [--config.key=value ...]
  jaxcomp eval --workdir DIR (--data FOLDER | --dataset NAME) [--step N] [--max_images N]
  jaxcomp rd --workdir DIR1 --workdir DIR2 ... (--data FOLDER | --dataset NAME) --out OUTDIR
      [--max_images N] [--baselines jpeg420,jpeg2000,webp] [--anchor CURVE] [--label CURVE=NAME ...]
      [--bd pchip,cubic] [--refresh]
  jaxcomp compress --workdir DIR [--step N] in.png out.jxc
  jaxcomp decompress --workdir DIR [--step N] in.jxc out.png

`jaxcomp <command> --help` prints the command's flags with their defaults; a command refuses the flags of others.
`eval` codes every image to a real file and back and prints a table (per image and mean: bpp from the file size,
the entropy model's estimate and their gap, PSNR RGB / YUV, SSIM, MS-SSIM, times, JPEG 4:2:0 at the same rate);
the full results go to DIR/eval/<data>.json. `rd` makes RD curves from several workdirs: workdirs whose saved
configs share a method and variant form one curve (one point per workdir, labelled by its lambda), next to the
Pillow baselines; OUTDIR receives rd_points.csv, rd_per_image.csv, bd_rate.csv / .md (BD-rates against the anchor
curve, by default the first workdir's; bd_rate_<method>.md for each further --bd method), estimate_vs_file.md,
rd_<metric>.png and one CompressAI-layout JSON per curve. Each workdir's point is cached in
DIR/eval/rd_<data>.json (keyed by its step and the images) and reused by later calls unless --refresh.

Flags follow absl / ml_collections config_flags (the big_vision / flax-examples convention). Any user error prints
`jaxcomp: error: <one line>` and exits with code 2; outputs are written atomically, so none is left half-written.
"""

from __future__ import annotations

import difflib
import importlib.util
import io
import json
import pathlib
import re
import sys
import types
from typing import Any, Callable, NamedTuple, Sequence

from absl import flags
from ml_collections import config_flags

from jaxcomp.errors import ConfigError, DataError, JaxcompError

COMMANDS = ("list", "train", "eval", "rd", "compress", "decompress")
USAGE = __doc__.split("\n\n")[1]
_REPO_CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


class _Flag(NamedTuple):
  define: Callable[..., Any] | None  # absl's DEFINE_*; None for --config (config_flags.DEFINE_config_file)
  metavar: str
  default: Any
  help: str
  unset: str | None = None  # what leaving a flag without default out means, for --help


_FLAGS = {
    "config": _Flag(None, "FILE[:variant]", None, "config file, configs/<method>.py[:variant]", "required"),
    "workdir": _Flag(flags.DEFINE_multi_string, "DIR", None, "run folder: checkpoints, logs, saved config",
                     "required"),
    "data": _Flag(flags.DEFINE_string, "FOLDER", None, "a folder of images; give this or --dataset", "none"),
    "dataset": _Flag(flags.DEFINE_string, "NAME", None, "a tfds dataset name, or 'sample'; give this or --data",
                     "none"),
    "step": _Flag(flags.DEFINE_integer, "N", None, "checkpoint step", "the latest"),
    "max_images": _Flag(flags.DEFINE_integer, "N", None, "at most this many images; 0 = all", "all"),
    "out": _Flag(flags.DEFINE_string, "OUTDIR", None, "output folder", "required"),
    "baselines": _Flag(flags.DEFINE_list, "A,B,...", ["jpeg420", "jpeg2000", "webp"],
                       "Pillow baselines: jpeg420, jpeg444, jpeg2000, webp, avif; empty for none"),
    "anchor": _Flag(flags.DEFINE_string, "CURVE", None, "curve the BD-rates are measured against",
                    "the first workdir's curve"),
    "configs_dir": _Flag(flags.DEFINE_string, "DIR", None, "folder of config files", "./configs, else the repo's"),
    "label": _Flag(flags.DEFINE_multi_string, "CURVE=NAME", None,
                   "rename a curve ('<method> <variant>', e.g. 'proxiqa bls_mse=BLS MSE'); repeatable", "none"),
    "bd": _Flag(flags.DEFINE_list, "M,...", ["pchip"],
                "BD interpolations: pchip, cubic; the first writes bd_rate.md, the others bd_rate_<m>.md"),
    "refresh": _Flag(flags.DEFINE_boolean, "", False, "re-measure points cached in each DIR/eval/rd_<data>.json"),
}
# The flags each command takes, in --help order; any other flag is refused. Keep USAGE (above) and README in step.
COMMAND_FLAGS = {
    "list": ("configs_dir",),
    "train": ("config", "workdir"),
    "eval": ("workdir", "data", "dataset", "step", "max_images"),
    "rd": ("workdir", "data", "dataset", "max_images", "out", "baselines", "anchor", "label", "bd", "refresh"),
    "compress": ("workdir", "step"),
    "decompress": ("workdir", "step"),
}
_FLAG_OVERRIDES = {  # (command, flag): the _Flag fields that differ for that command
    ("rd", "workdir"): {"help": "a run folder; repeat the flag, one workdir per rate point"},
    ("eval", "max_images"): {"unset": "all"},
}
_REFUSAL_NOTES = {("rd", "step"): "it uses each workdir's latest checkpoint"}


def _flag(command: str, name: str) -> _Flag:
  return _FLAGS[name]._replace(**_FLAG_OVERRIDES.get((command, name), {}))


def _define_flags(argv: Sequence[str], command: str) -> flags.FlagValues:
  """A FlagValues holding only the flags `command` takes, so absl itself refuses the others."""
  # A private FlagValues, so main() can run several times in one process (tests) and never clashes with absl.FLAGS.
  fv = flags.FlagValues()
  fv.set_gnu_getopt(True)  # flags may follow positional arguments (`compress in.png out.jxc --workdir RUN`)
  for name in COMMAND_FLAGS[command]:
    f = _flag(command, name)
    if name == "config":
      # sys_argv: config_flags discovers the --config.key overrides from it (default: sys.argv, wrong in-process).
      config_flags.DEFINE_config_file(name, None, f.help, flag_values=fv, lock_config=True, sys_argv=list(argv))
    elif f.define is flags.DEFINE_integer:
      f.define(name, f.default, f.help, lower_bound=0, flag_values=fv)  # a negative count or step is a typo
    else:
      f.define(name, f.default, f.help, flag_values=fv)
  return fv


def _flag_list(command: str) -> str:
  return ", ".join(f"--{n}" for n in COMMAND_FLAGS[command])


def command_usage(command: str) -> str:
  """The USAGE lines of `command` (with their continuation lines)."""
  lines, inside = [], False
  for line in USAGE.splitlines():
    if line.lstrip().startswith("jaxcomp "):
      inside = line.split()[1] == command
    if inside:
      lines.append(line)
  return "\n".join(lines)


def command_help(command: str) -> str:
  """`jaxcomp <command> --help`: the usage line(s), then each flag with its default and help."""
  rows = []
  for name in COMMAND_FLAGS[command]:
    f = _flag(command, name)
    default = ",".join(f.default) if isinstance(f.default, list) else f.default
    shown = f.unset if default is None else default
    rows.append((f"--{name} {f.metavar}".rstrip(),
                 f"{f.help} ({'required' if shown == 'required' else f'default: {shown}'})"))
    if name == "config":
      rows.append(("--config.key=value", "override one field of the config (repeatable; see `jaxcomp list`)"))
  rows.append(("-h, --help", "print this help and exit"))
  width = max(len(r[0]) for r in rows)
  return (f"usage:\n{command_usage(command)}\n\nflags of {command}:\n"
          + "\n".join(f"  {left:<{width}s}  {right}" for left, right in rows))


# ----------------------------------------------------------------------------------------------------------------
# Config files.


def _config_arg(argv: Sequence[str]) -> str | None:
  for i, a in enumerate(argv):
    if a in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith(("--config=", "-config=")):
      return a.split("=", 1)[1]
  return None


def _load_config_module(path: pathlib.Path) -> types.ModuleType:
  spec = importlib.util.spec_from_file_location(f"_jaxcomp_config_{path.stem}", path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"config file {path} is not a Python file")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses defined in the file look their module up there
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    raise ConfigError(f"config file {path} fails to load: {type(e).__name__}: {e}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {path} defines no get_config()")
  return module


def variants(module: types.ModuleType) -> dict[str, str]:
  """The config file's `VARIANTS = {name: one-line description}` (empty when it declares none)."""
  v = getattr(module, "VARIANTS", None)
  return dict(v) if isinstance(v, dict) else {}


def _check_config_file(spec: str) -> None:
  """Clear errors for a missing file or an unknown variant, before config_flags runs get_config."""
  path_str, _, variant = spec.partition(":")
  path = pathlib.Path(path_str)
  if not path.is_file():
    raise ConfigError(f"config file {path_str} not found")
  module = _load_config_module(path)
  known = variants(module)
  if variant and known and variant not in known:
    raise ConfigError(f"unknown variant {variant!r} for {path_str} (known: {', '.join(known)})")


def _unrecognized(command: str, name: str) -> ConfigError:
  """A flag `command` does not define: another command's (named as such), or a typo (with a suggestion)."""
  if name.split(".")[0] in _FLAGS:
    note = _REFUSAL_NOTES.get((command, name))
    return ConfigError(f"{command} does not take --{name}{': ' + note if note else ''} "
                       f"(flags of {command}: {_flag_list(command)})")
  close = difflib.get_close_matches(name, COMMAND_FLAGS[command], n=1)
  hint = f"did you mean --{close[0]}? " if close else ""
  return ConfigError(f"unknown flag --{name} for {command} ({hint}flags of {command}: {_flag_list(command)})")


def _flag_error(e: Exception, command: str) -> ConfigError:
  """One line for an absl / config_flags parse error."""
  msg = str(e)
  if isinstance(e, flags.UnrecognizedFlagError):
    return _unrecognized(command, getattr(e, "flagname", msg))
  if isinstance(e, (AttributeError, KeyError)):
    # config_flags raises these for --config.<key> naming no field of the locked config; the message is a repr.
    text = msg.replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    key = re.search(r"'([\w.]+)'", text)
    hint = re.search(r'Did you mean "([\w.]+)"', text)
    return ConfigError(f"unknown config key {key.group(1) if key else text.strip()!r}"
                       + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
  if "Traceback" in msg:  # get_config raised: keep the flag and the exception line, drop the traceback
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    return ConfigError(f"{lines[0].rstrip(':')} {lines[-1].strip()}")
  return ConfigError(" ".join(msg.split()))


def _parse(argv: Sequence[str], command: str) -> tuple[flags.FlagValues, list[str]]:
  fv = _define_flags(["jaxcomp", *argv], command)
  spec = _config_arg(argv) if "config" in COMMAND_FLAGS[command] else None
  if spec is not None:
    _check_config_file(spec)
  try:
    rest = fv(["jaxcomp", *argv])
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise _flag_error(e, command) from None
  return fv, list(rest[1:])


def _get_config(fv: flags.FlagValues):
  try:
    config = fv.config
  except (flags.Error, AttributeError, IOError, ValueError) as e:
    raise _flag_error(e, "train") from None
  if config is None:
    raise ConfigError("--config is required: --config configs/<method>.py[:variant]")
  if "method" not in config:
    raise ConfigError(f"config {fv['config'].config_filename} sets no 'method'")
  return config


def _workdirs(fv: flags.FlagValues) -> list[pathlib.Path]:
  if not fv.workdir:
    raise ConfigError("--workdir is required")
  out = [pathlib.Path(w) for w in fv.workdir]
  for w in out:
    if not w.is_dir():
      raise ConfigError(f"workdir {w} does not exist")
  return out


def _workdir(fv: flags.FlagValues, must_exist: bool) -> pathlib.Path:
  if not fv.workdir:
    raise ConfigError("--workdir is required")
  if len(fv.workdir) > 1:
    raise ConfigError(f"--workdir is given {len(fv.workdir)} times; only `jaxcomp rd` takes several")
  workdir = pathlib.Path(fv.workdir[0])
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"workdir {workdir} is a file, not a folder")
  if must_exist and not workdir.is_dir():
    raise ConfigError(f"workdir {workdir} does not exist")
  return workdir


# ----------------------------------------------------------------------------------------------------------------
# Commands.


def cmd_list(fv: flags.FlagValues, args: list[str]) -> int:
  from jaxcomp import methods
  if args:
    raise ConfigError(f"list takes no arguments, got {args}")
  print("methods:")
  available = methods.available()
  width = max((len(name) for name in available), default=0)
  for name, problem in available.items():
    print(f"  {name:<{width}s} {methods.METHODS[name] if problem is None else '(not available: ' + problem + ')'}")
  candidates = [pathlib.Path(fv.configs_dir)] if fv.configs_dir else [pathlib.Path("configs"), _REPO_CONFIGS]
  folder = next((c for c in candidates if c.is_dir()), None)
  if folder is None:
    raise DataError(f"configs folder {candidates[0]} not found")
  rows: list[tuple[str, str | None]] = []  # (target, description), or (error line, None); printed once all are known
  for path in sorted(folder.glob("*.py")):
    if path.name.startswith("_"):
      continue
    try:
      module = _load_config_module(path)
    except ConfigError as e:
      if "defines no get_config" not in str(e):  # other Python files beside the configs are not configs
        rows.append((f"{path.name}: {e}", None))
      continue
    described = variants(module)
    if not described:  # a config without VARIANTS: one line from its docstring
      doc = (module.__doc__ or "").strip().splitlines()
      described = {"": doc[0] if doc else "(no VARIANTS)"}
    for variant, description in described.items():
      rows.append((f"{path}:{variant}" if variant else str(path), str(description)))
  width = max((len(t) for t, d in rows if d is not None), default=0)  # one column, however long the paths
  print(f"configs ({folder}):")
  for target, description in rows:
    print(f"  {target}" if description is None else f"  {target:<{width}s} {description}")
  return 0


def cmd_train(fv: flags.FlagValues, args: list[str]) -> int:
  if args:
    raise ConfigError(f"train takes no positional arguments, got {args}")
  import jax
  from jaxcomp import methods, parallel
  from jaxcomp.train import checkpoint
  config = _get_config(fv)
  workdir = _workdir(fv, must_exist=False)
  module = methods.get_method(config.method)
  # Before anything touches a JAX backend (orbax below does): joining a multi-host job must come first.
  parallel.initialize_distributed()
  # Early, clear refusal of another method's workdir (the Checkpointer checks again, on every process; here only
  # single-process, since one process may see a folder that another is creating).
  old = checkpoint.saved_config(workdir) if jax.process_count() == 1 else None
  if old is not None and old.get("method") != config.method:
    from jaxcomp.errors import CheckpointError
    raise CheckpointError(f"workdir {workdir} holds a checkpoint of method {old.get('method')!r}, "
                          f"not {config.method!r}; use another --workdir")
  module.train_and_evaluate(config, str(workdir))
  return 0


def _method_for(workdir: pathlib.Path, step: int | None):
  from jaxcomp import methods
  from jaxcomp.train import restore
  config = restore.load_config(workdir, step)
  return config, methods.get_method(config.method)


def _data_spec(fv: flags.FlagValues, command: str) -> tuple[str, str]:
  """`(spec for jaxcomp.data.load_eval_images, its label for WORKDIR/eval/<label>.json)` from --data / --dataset."""
  if bool(fv.data) == bool(fv.dataset):
    raise ConfigError(f"{command} needs exactly one of --data FOLDER or --dataset NAME")
  if fv.data:
    folder = pathlib.Path(fv.data)
    if not folder.is_dir():
      raise DataError(f"data folder {folder} not found")
    spec, name = str(folder), folder.name or "data"
  else:
    spec = name = fv.dataset
  return spec, name  # evaluation.report_path makes it a safe file name


def _summary(results: dict) -> str:
  """The human table of an eval: `jaxcomp.evaluation.eval_table` for codecs, else one line per scalar."""
  images = results.get("images")
  if isinstance(images, list) and images and isinstance(images[0], dict) and "bpp" in images[0] \
      and "psnr" in images[0]:
    from jaxcomp.evaluation import eval_table
    return eval_table(results)
  return "\n".join(f"{k:<16s} {v:.6g}" if isinstance(v, float) else f"{k:<16s} {v}"
                   for k, v in sorted(results.items()) if isinstance(v, (int, float, str)))


def cmd_eval(fv: flags.FlagValues, args: list[str]) -> int:
  if args:
    raise ConfigError(f"eval takes no positional arguments, got {args}")
  spec, name = _data_spec(fv, "eval")
  workdir = _workdir(fv, must_exist=True)
  from jaxcomp import evaluation
  # The one evaluation (also run at the end of `jaxcomp train`): step --step's parameters, every image of the data
  # unless --max_images.
  results = evaluation.evaluate_run(workdir, spec, step=fv.step, max_images=fv.max_images or 0)
  path = evaluation.report_path(workdir, name)
  _write(path, (json.dumps(results, indent=2, sort_keys=True, default=float) + "\n").encode())
  print(_summary(results))
  scored = evaluation.scored_line(results)
  if scored:
    print(scored)
  print(f"step {results['step']}; results: {path}")
  return 0


def cmd_rd(fv: flags.FlagValues, args: list[str]) -> int:
  if args:
    raise ConfigError(f"rd takes no positional arguments, got {args}")
  if not fv.out:
    raise ConfigError("rd needs --out OUTDIR")
  if pathlib.Path(fv.out).exists() and not pathlib.Path(fv.out).is_dir():  # refused now, not after the coding
    raise ConfigError(f"--out {fv.out} is a file, not a folder")
  spec, _ = _data_spec(fv, "rd")
  workdirs = _workdirs(fv)
  bad = [item for item in fv.label or [] if "=" not in item]
  if bad:
    raise ConfigError(f"--label {bad[0]!r}: expected CURVE=NAME, e.g. 'proxiqa bls_mse=BLS MSE'")
  from jaxcomp import evaluation
  from jaxcomp.data import load_eval_images
  loaded = load_eval_images(spec, max_images=fv.max_images or 0)  # the same loader as `jaxcomp eval`
  progress = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
  curves, written = evaluation.rd_run(workdirs, loaded, fv.out, baselines=fv.baselines, anchor=fv.anchor,
                                      labels=dict(item.split("=", 1) for item in fv.label or []),
                                      bd_methods=fv.bd, cache=not fv.refresh, progress=progress)
  anchor = fv.anchor if fv.anchor is not None else curves[0].name
  rows = evaluation.rd_table(curves, anchor, method=fv.bd[0] if fv.bd else "pchip")
  cols = ["name", "points", "bpp_min", "bpp_max", *[k for k in rows[0] if k.startswith("bd-")]]
  print(f"BD against {anchor!r} (BD-rate %, BD-PSNR dB):")
  print(evaluation.format_table(rows, cols))
  if len(loaded) < loaded.total:
    print(f"scored {len(loaded)} of {loaded.total} images (--max_images)")
  print(f"written to {fv.out}: " + ", ".join(sorted(p.name for p in written.values())))
  return 0


def _codec_at(workdir: pathlib.Path, step: int | None):
  from jaxcomp.train import restore
  config, module = _method_for(workdir, step)
  if not callable(getattr(module, "build_codec", None)):
    raise ConfigError(f"method {config.method!r} is not a codec (no build_codec)")
  _, state = restore.load_for_eval(workdir, step)
  return config, module.build_codec(config, state)


def _codec(fv: flags.FlagValues):
  return _codec_at(_workdir(fv, must_exist=True), fv.step)


def _write(path: pathlib.Path, data: bytes) -> None:
  """Atomic write; an unwritable output (a folder there, no permission, a full disk) is one line."""
  from jaxcomp.io_utils import write_bytes_atomic
  try:
    write_bytes_atomic(path, data)
  except OSError as e:
    raise DataError(f"cannot write {path}: {e.strerror or e}") from None


def _check_args(args: list[str], command: str) -> tuple[pathlib.Path, pathlib.Path]:
  """The input and output paths, checked before any coding work: the output is never the input (after resolving
  links), never an existing folder, and its folder exists and is writable."""
  import os
  if len(args) != 2:
    raise ConfigError(f"{command} takes an input and an output path, got {len(args)} argument(s)")
  src, dst = pathlib.Path(args[0]), pathlib.Path(args[1])
  if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
    raise ConfigError(f"{command}: output {dst} is the input {src}; it would be overwritten, give another path")
  if dst.is_dir():
    raise DataError(f"output {dst} is a folder; give a file name")
  parent = dst.resolve().parent
  if not parent.is_dir():
    raise DataError(f"output folder {parent} {'is a file' if parent.exists() else 'does not exist'}")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise DataError(f"output folder {parent} is not writable")
  return src, dst


def cmd_compress(fv: flags.FlagValues, args: list[str]) -> int:
  src, dst = _check_args(args, "compress")
  if not src.is_file():
    raise DataError(f"input image {src} not found")
  config, codec = _codec(fv)
  from jaxcomp.data import read_image
  image = read_image(src, grayscale=bool(config.get("grayscale", False)))
  data = codec.compress(image)
  _write(dst, data)
  h, w = image.shape[:2]
  print(f"{src} -> {dst}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp")
  return 0


def cmd_decompress(fv: flags.FlagValues, args: list[str]) -> int:
  import numpy as np
  from PIL import Image
  src, dst = _check_args(args, "decompress")
  if not src.is_file():
    raise DataError(f"input file {src} not found")
  fmt = Image.registered_extensions().get(dst.suffix.lower())
  if fmt is None:
    raise DataError(f"output {dst}: unknown image extension {dst.suffix!r} (use .png)")
  _, codec = _codec(fv)
  try:
    bitstream = src.read_bytes()
  except OSError as e:  # e.g. no read permission
    raise DataError(f"cannot read {src}: {e.strerror or e}") from None
  image = np.asarray(codec.decompress(bitstream))
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise DataError(f"{src}: the codec decoded a {image.dtype} array of shape {image.shape}, "
                    "expected uint8 [H, W, 1|3]")
  buf = io.BytesIO()
  try:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format=fmt)
  except (KeyError, OSError, ValueError) as e:  # Pillow knows the extension but cannot write it, or not this mode
    raise DataError(f"output {dst}: Pillow cannot write {fmt} images of this kind ({e}); use .png") from None
  _write(dst, buf.getvalue())
  print(f"{src} -> {dst}: {image.shape[1]}x{image.shape[0]}")
  return 0


_DISPATCH = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "rd": cmd_rd, "compress": cmd_compress,
             "decompress": cmd_decompress}


_HELP = ("-h", "--help", "-help")


def _wants_help(argv: Sequence[str]) -> bool:
  flags_part = argv[:argv.index("--")] if "--" in argv else argv  # after `--` everything is a positional argument
  return any(a in _HELP for a in flags_part)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point (`jaxcomp = "jaxcomp.cli:main"`); returns the exit code (0, 2 on a user error)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["help"] and len(argv) > 1:  # `jaxcomp help eval` is `jaxcomp eval --help`
    argv = [argv[1], "--help"]
  if not argv or argv[0] in (*_HELP, "help"):
    print(f"usage:\n{USAGE}\n\n`jaxcomp <command> --help` prints a command's flags, with their defaults.")
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  try:
    if command not in _DISPATCH:
      raise ConfigError(f"unknown command {command!r} (one of: {', '.join(COMMANDS)})")
    if _wants_help(rest):
      print(command_help(command))
      return 0
    fv, args = _parse(rest, command)
    return _DISPATCH[command](fv, args)
  except JaxcompError as e:
    print(f"jaxcomp: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("jaxcomp: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
