"""PPO diagnostics on arithmetic with the gold reward: one line per iteration (rollout gold, KL, β, response length,
EOS fraction, value loss, policy loss, approx. KL, clip fraction, entropy, first-minibatch ratio, seconds of
generation + update) and the greedy gold accuracy on 200 validation problems before and after.

The start policy is the one ``ppo_benchmark.py gold --folder F`` trains (``F/policy``). Examples
(benchmarks/results/ppo.md):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_diagnose.py F/policy --iters 30 --lr 3e-5 --lam 1.0
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_diagnose.py F/policy --iters 30 --lr 3e-5 --value-lr 1e-3
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from lit_rlhf.data import PromptDataModule
from lit_rlhf.eval.gold import sample_and_score
from lit_rlhf.modules import PPO
from lit_rlhf.rollout import SamplingConfig
from lit_rlhf.tasks import Arithmetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy", help="exported start policy folder")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--value-lr", type=float, default=None)
    parser.add_argument("--value-head", action="store_true")
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--kl-target", type=float, default=None, help="None = fixed β")
    parser.add_argument("--kl-horizon", type=int, default=10000)
    parser.add_argument("--temp", type=float, default=0.7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--mb", type=int, default=2)
    parser.add_argument("--vf", type=float, default=0.1)
    parser.add_argument("--lam", type=float, default=0.95)
    parser.add_argument("--eos-pen", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()

    torch.set_num_threads(1)
    task = Arithmetic(min_steps=2, max_steps=3, max_operand=9, max_value=99)
    L.seed_everything(a.seed)
    module = PPO(model=a.policy, sampling={"temperature": a.temp, "max_new_tokens": 48}, ppo_epochs=a.epochs,
                 num_mini_batches=a.mb, kl_coef=a.kl_coef, kl_target=a.kl_target, kl_horizon=a.kl_horizon,
                 missing_eos_penalty=a.eos_pen, vf_coef=a.vf, lam=a.lam, value_head=a.value_head, value_lr=a.value_lr,
                 optimizer=lambda ps: torch.optim.AdamW(ps, lr=a.lr, eps=1e-5, weight_decay=0.0))
    dm = PromptDataModule(task=task, task_sizes={"train": a.batch * a.iters, "val": 200, "test": 10}, max_length=48,
                          batch_size=a.batch, seed=a.seed, group_by_length=False)

    def greedy(pl_module) -> float:
        items = dm.dataset("val").items
        result = sample_and_score(pl_module.model, pl_module.tokenizer, task, [x["prompt_ids"] for x in items],
                                  [x["prompt_text"] for x in items], SamplingConfig(max_new_tokens=48, temperature=0.0))
        return float(result.rewards.mean())

    class Report(L.Callback):
        def on_train_start(self, trainer, pl_module):
            print("greedy before", greedy(pl_module), flush=True)

        def on_train_batch_end(self, trainer, pl_module, *args):
            m, first = pl_module.last_metrics, pl_module.update_stats[0]
            print(f"{trainer.global_step // (a.epochs * a.mb):3d} score {m['objective/scores']:.3f} "
                  f"kl {m['objective/kl']:.2f} beta {m['objective/kl_coef']:.4f} len {m['response_length/mean']:.1f} "
                  f"eos {m['eos/fraction']:.2f} vloss {m['loss/value_avg']:.3f} pg {m['loss/policy_avg']:.3f} "
                  f"akl {m['policy/approxkl_avg']:.4f} clip {m['policy/clipfrac_avg']:.3f} "
                  f"ent {m['policy/entropy_avg']:.3f} r0 {first['ratio']:.4f} "
                  f"t {m['time/generation']:.1f}+{m['time/update']:.1f}", flush=True)

        def on_train_end(self, trainer, pl_module):
            print("greedy after", greedy(pl_module), flush=True)

    start = time.time()
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
              callbacks=[Report()]).fit(module, dm)
    print("wall", time.time() - start)


if __name__ == "__main__":
    main()
