"""jaxcomp BLS (bmshj2018 layout, N=M=64) trained with MSE on the dumped batches; the ProxIQA Trainer step, Adam 1e-3.

  PYTHONPATH=. python docs/proxiqa/convergence/train_jaxcomp.py /tmp/batches.npy bmshj2018 1500 0.0130

Prints the mean training PSNR (clipped reconstruction), bpp and loss of the last 100 steps every 250 steps.
"""
import numpy as np, sys, time, json
from configs import proxiqa
from jaxcomp import parallel
from jaxcomp.methods.proxiqa import train as T
batches, layout, steps, lmbda = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = proxiqa.get_config("bls_mse")
c.unlock(); c.patch_size=64; c.N=c.M=64; c.layout=layout; c.lmbda=lmbda
c.learning_rate=1e-3; c.lr_boundary=10**9; c.lr_after=1e-3
B = np.load(batches, mmap_mode="r")
tr = T.Trainer(c)
st = parallel.replicate(T.init_state(c), c.parallel)
acc=[]; t0=time.time()
for i in range(steps):
  st, terms = tr.step(st, parallel.shard(np.asarray(B[i])[None], c.parallel))
  acc.append({k: float(np.asarray(v).ravel()[0]) for k,v in terms.items() if k in ("psnr","bpp","loss")})
  if (i+1)%250==0:
    m={k: np.mean([a[k] for a in acc[-100:]]) for k in acc[0]}
    print(f"ours {layout} step {i+1} psnr {m['psnr']:.2f} bpp {m['bpp']:.3f} loss {m['loss']:.3f} t {time.time()-t0:.0f}s", flush=True)
