# Shared helpers of the launch scripts (sourced, not run).

# quote ARGS...: one shell-safe string of the arguments.
quote() {
  local out="" a
  for a in "$@"; do out+="${out:+ }$(printf '%q' "$a")"; done
  printf '%s' "$out"
}

# run_or_print CMD...: print the command under --dry-run, otherwise run it.
run_or_print() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    quote "$@"; echo
  else
    "$@"
  fi
}
