"""The transformer stage's optimizer: AdamW, or Muon for the blocks' weight matrices (train.optimizer).

Muon (Jordan et al. 2024, the optimizer of modded-nanogpt's speedrun) takes SGD-momentum's update
of each 2-D weight and replaces it by the nearest semi-orthogonal matrix (five Newton-Schulz
iterations), so every direction of the matrix moves at the same rate. Embeddings, the output head,
biases and norms stay on AdamW, as in the speedrun. Where a run trains in bf16 the iterations run in bf16 too, as
the speedrun's do: on this project's 2-core AVX512-BF16 CPU a `best` pair step goes from 0.86 to 0.80-0.84 s
(BENCHMARKS.md, "Muon in bf16").
"""

from __future__ import annotations

import torch

from ..config import TrainConfig


def newton_schulz(update: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(m, n) -> approximately U V^T of its SVD, by the quintic iteration tuned in modded-nanogpt, computed in
    `dtype` (returned in fp32)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = (update.float() / (update.norm() + 1e-7)).to(dtype)     # singular values now at most 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.t()                                        # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.t()
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.t() if tall else x).float()


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, orthogonalized (Newton-Schulz in `dtype`), scaled by sqrt(max(1, rows / columns));
    2-D parameters only."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.dtype = dtype

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(parameter)
                momentum = state["momentum"].mul_(group["momentum"]).add_(parameter.grad)
                update = parameter.grad.add(momentum, alpha=group["momentum"])           # Nesterov
                scale = max(1.0, parameter.shape[0] / parameter.shape[1]) ** 0.5
                parameter.add_(newton_schulz(update, dtype=self.dtype).to(parameter.dtype), alpha=-group["lr"] * scale)


class Optimizers:
    """Several optimizers stepped as one (what the trainer and the resume state see)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, own in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(own)


def build_optimizer(model: torch.nn.Module, settings: TrainConfig, fused: bool = False, bf16: bool = False):
    """AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest (its Newton-Schulz in bf16
    where `bf16`: the run trains in it). Each param group carries `lr_scale`: the schedule sets
    lr = train.lr * schedule * lr_scale (Muon's is muon_lr / lr)."""
    adamw = dict(lr=settings.lr, betas=(0.9, 0.99), weight_decay=settings.weight_decay, fused=fused)
    if settings.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), **adamw)
        optimizer.param_groups[0]["lr_scale"] = 1.0
        return optimizer
    matrices = [p for name, p in model.named_parameters() if p.ndim == 2 and name.startswith("blocks.")]
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    muon = Muon(matrices, lr=settings.muon_lr, dtype=torch.bfloat16 if bf16 else torch.float32)
    others = torch.optim.AdamW(rest, **adamw)
    muon.param_groups[0]["lr_scale"] = settings.muon_lr / settings.lr
    others.param_groups[0]["lr_scale"] = 1.0
    return Optimizers(others, muon)
