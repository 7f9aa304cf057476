"""CompressAI FactorizedPrior(64, 64) (= bmshj2018-factorized layout) trained on the same batches, same loss and Adam
1e-3 (quantiles: Adam 1e-3 on the aux loss), torch on 2 threads.

  python docs/proxiqa/convergence/train_compressai.py /tmp/batches.npy 1500 0.0130     # a python with torch + compressai

Prints the same figures as train_jaxcomp.py (PSNR of the clamped reconstruction).
"""
import numpy as np, sys, time, torch
from compressai.models import FactorizedPrior
torch.manual_seed(0); torch.set_num_threads(2)
batches, steps, lmbda = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
B = np.load(batches, mmap_mode="r")
net = FactorizedPrior(64, 64)
main=[p for n,p in net.named_parameters() if not n.endswith(".quantiles")]
aux=[p for n,p in net.named_parameters() if n.endswith(".quantiles")]
opt=torch.optim.Adam(main, lr=1e-3); aopt=torch.optim.Adam(aux, lr=1e-3)
acc=[]; t0=time.time()
for i in range(steps):
  x = torch.from_numpy(np.asarray(B[i]).astype(np.float32)/255.).permute(0,3,1,2)
  opt.zero_grad(); aopt.zero_grad()
  out = net(x)
  npix = x.shape[0]*x.shape[2]*x.shape[3]
  bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values())/(-np.log(2)*npix)
  mse = torch.mean((out["x_hat"]-x)**2)
  loss = lmbda*255**2*mse + bpp
  loss.backward()
  opt.step()
  a = net.aux_loss(); a.backward(); aopt.step()
  with torch.no_grad():
    mc = torch.mean((out["x_hat"].clamp(0,1)-x)**2)
  acc.append(dict(psnr=float(-10*torch.log10(mc)), bpp=float(bpp), loss=float(loss)))
  if (i+1)%250==0:
    m={k: np.mean([a[k] for a in acc[-100:]]) for k in acc[0]}
    print(f"cai step {i+1} psnr {m['psnr']:.2f} bpp {m['bpp']:.3f} loss {m['loss']:.3f} t {time.time()-t0:.0f}s", flush=True)
