"""Experiments of Laborieux et al. 2021 built on the training library: the analyses of
metaplasticity (the toy quadratic problem of Fig. 5a-b, flip importance by |Wh| of
Fig. 5c-e) and the paper's reproductions.

This package sits above `training` and `zoo`: it imports them, they never import it.

```bash
python -m experiments.toy_quadratic --out analyses/
python -m experiments.importance --run-dir runs/fmnist-stream-m2.5 --layer dense_2 --out analyses/
```
"""
