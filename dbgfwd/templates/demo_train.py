"""A tiny training-like loop for `dbgfwd demo`: each rank does steps forever until stopped.

Set a breakpoint on the line marked BREAK HERE and attach: every rank stops there with its own
`rank`, `step` and `loss`.
"""

import math
import os
import time

rank = int(os.environ.get("RANK", "0"))
world_size = int(os.environ.get("WORLD_SIZE", "1"))
interval = float(os.environ.get("DBGFWD_DEMO_STEP_SECONDS", "0.5"))


def train_step(step: int, weight: float) -> tuple[float, float]:
    grad = math.sin(step / 10.0 + rank) * 0.1
    weight -= 0.01 * grad
    loss = (weight - rank) ** 2  # BREAK HERE
    return weight, loss


def main() -> None:
    weight = 0.0
    step = 0
    while True:
        weight, loss = train_step(step, weight)
        step += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()
