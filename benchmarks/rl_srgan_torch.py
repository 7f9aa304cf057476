"""The PyTorch SRGAN step that benchmarks/rl_srgan.py times against jaxcomp's (run in a separate interpreter that
has torch: `--torch-python`). Same shapes and work as `jaxcomp.methods.rl_srgan.train.make_step` with the RL term
off: generator (conv 9x9/F + PReLU, B residual blocks with BatchNorm, conv + BN + long skip, log2(r) sub-pixel x2
stages, conv 9x9 to RGB), discriminator (conv 3x3/F + LeakyReLU, 7 strided/plain conv + BN + LeakyReLU blocks, global
average pool, Dense 1024, Dense 1); G step: MSE + 1e-3 softplus(-D(G(x))) with D in eval mode; D step: binary
cross-entropy on the real and (detached) generated images in one batch; Adam 1e-3 for both.

  PYTHON -m benchmarks.rl_srgan_torch --batch 16 --size 96 --steps 3     # prints {"seconds": [...], "torch": ...}
"""

import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


class Res(nn.Module):
  def __init__(self, f):
    super().__init__()
    self.c1, self.b1, self.p = nn.Conv2d(f, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.PReLU(init=0.25)
    self.c2, self.b2 = nn.Conv2d(f, f, 3, padding=1, bias=False), nn.BatchNorm2d(f)

  def forward(self, x):
    return x + self.b2(self.c2(self.p(self.b1(self.c1(x)))))


class Generator(nn.Module):
  def __init__(self, f=64, blocks=5, scale=4):
    super().__init__()
    self.head = nn.Sequential(nn.Conv2d(3, f, 9, padding=4), nn.PReLU(init=0.25))
    self.body = nn.Sequential(*[Res(f) for _ in range(blocks)])
    self.tail = nn.Sequential(nn.Conv2d(f, f, 3, padding=1, bias=False), nn.BatchNorm2d(f))
    up = []
    for _ in range(int(math.log2(scale))):
      up += [nn.Conv2d(f, 4 * f, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(init=0.25)]
    self.up = nn.Sequential(*up, nn.Conv2d(f, 3, 9, padding=4))

  def forward(self, x):
    e = self.head(x)
    return self.up(self.tail(self.body(e)) + e)


class Discriminator(nn.Module):
  def __init__(self, f=64):
    super().__init__()
    widths = [f * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
    strides = (1, 2, 1, 2, 1, 2, 1, 2)
    layers, c = [nn.Conv2d(3, widths[0], 3, padding=1), nn.LeakyReLU(0.2)], widths[0]
    for w, s in zip(widths[1:], strides[1:]):
      layers += [nn.Conv2d(c, w, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
      c = w
    self.features = nn.Sequential(*layers)
    self.head = nn.Sequential(nn.Linear(c, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1))

  def forward(self, x):
    return self.head(self.features(x).mean((2, 3))).squeeze(1)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--size", type=int, default=96)
  ap.add_argument("--scale", type=int, default=4)
  ap.add_argument("--features", type=int, default=64)
  ap.add_argument("--blocks", type=int, default=5)
  ap.add_argument("--steps", type=int, default=3)
  a = ap.parse_args()
  torch.manual_seed(0)
  g, d = Generator(a.features, a.blocks, a.scale), Discriminator(a.features)
  og, od = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
  hr = torch.rand(a.batch, 3, a.size, a.size)
  lr = F.interpolate(hr, scale_factor=1 / a.scale, mode="bicubic", antialias=True)

  def step():
    g.train()
    d.eval()
    fake = g(lr)
    loss_g = F.mse_loss(fake, hr) + 1e-3 * F.softplus(-d(fake)).mean()
    og.zero_grad(set_to_none=True)
    loss_g.backward()
    og.step()
    d.train()
    logits = d(torch.cat([hr, fake.detach()]))
    loss_d = F.softplus(-logits[: a.batch]).mean() + F.softplus(logits[a.batch:]).mean()
    od.zero_grad(set_to_none=True)
    loss_d.backward()
    od.step()

  step()  # warm-up
  seconds = []
  for _ in range(a.steps):
    t = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - t)
  print(json.dumps({"seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
  main()
