"""Writes the training batches both implementations see (docs/proxiqa.md, "Training against CompressAI").

  PYTHONPATH=. python docs/proxiqa/convergence/dump_batches.py /tmp/batches.npy 3000

`steps` batches of 8 random 64x64 crops of ../shared/data/photos-train from the jaxcomp loader, uint8 [S, 8, 64, 64, 3].
"""
import numpy as np, sys
out = sys.argv[1]; steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
sys.argv = [sys.argv[0]]
from configs import proxiqa
from jaxcomp.methods.proxiqa import train as T
c = proxiqa.get_config("bls_mse")
c.unlock(); c.train_data="../shared/data/photos-train"; c.patch_size=64; c.num_workers=0
it = iter(T.make_train_loader(c))
bs = []
for i in range(steps):
  b = next(it); b = b["image"] if isinstance(b, dict) else b
  bs.append(np.asarray(b).reshape(-1,64,64,3))
np.save(out, np.stack(bs))
print(np.stack(bs).shape)
