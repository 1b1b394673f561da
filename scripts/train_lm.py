"""The main job for sequences: a character-level language model on the Python
documentation text, trained with hand-derived gradients.

    python scripts/train_lm.py                     # GPT, manual backprop, ~minutes
    python scripts/train_lm.py --arch lstm --grad autodiff
    python scripts/train_lm.py --quick             # tens of seconds

The corpus is the text every CPython carries (``pydoc_data``, see
:mod:`fnn.datasets._text` for the attribution), cut by position into a training
part (first 90 %) and a validation part (last 10 %); tokens are characters. The
model (``--arch gpt``: :func:`fnn.models.gpt`, 2 pre-norm transformer blocks, 4
heads, width 64, context 64; ``--arch lstm``: :func:`fnn.models.lstm_lm`) maps
ids ``(m, T)`` to next-character logits ``(m, T, V)`` and is trained on random
windows with AdamW, a warm-up and a cosine decay, on the token-mean sequence
cross-entropy. ``--grad manual`` (default) computes the gradient by the model's
hand-written backward (``fnn.backprop(blocks=model)``: the forward, the fused
softmax error, the reverse walk); ``--grad autodiff`` by ``jax.grad`` of
``fnn.loss``. Every ``--eval-every`` steps
it reports the training and validation loss in nats and bits per character
(bpc = loss / ln 2) against a unigram model's validation bpc (character
frequencies of the training part, add-one smoothed).

Writes, to ``--out`` (default ``runs/lm``), the artefacts of ``scripts/train.py``:
  * ``checkpoint.fnn``: parameters, optimizer state and step after every
    evaluation, with the run's configuration;
  * ``model.fnn``: the model (architecture as data) and its final parameters
    (``fnn.checkpoint.save_model``; read back with ``load_model``), with the
    configuration, the vocabulary and the final metrics as metadata;
  * ``metrics.jsonl``: one JSON line per evaluation;
  * ``curves.png``: bits per character against steps (when matplotlib is
    installed);
  * ``summary.json``: final losses, bpc, the unigram bpc, time, parameters, and
    a sample of generated text (also printed).
"""

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fnn  # noqa: E402
from fnn import nn  # noqa: E402
from fnn._seqloss import sequence_cross_entropy  # noqa: E402
from fnn.datasets import _text  # noqa: E402
from fnn.models import gpt, lstm_lm  # noqa: E402

LN2 = math.log(2.0)
PROMPT = "The "


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a character-level language model with fnn on the "
        "Python documentation text.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--arch", choices=("gpt", "lstm"), default="gpt")
    p.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    p.add_argument("--layers", type=int, default=None, help="gpt 2, lstm 1")
    p.add_argument("--heads", type=int, default=4, help="gpt attention heads")
    p.add_argument("--width", type=int, default=None, help="gpt d / lstm hidden")
    p.add_argument("--context", type=int, default=64, help="window length T")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="default 1500 (quick 100)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--eval-every", type=int, default=None, help="steps per eval")
    p.add_argument("--max-chars", type=int, default=None, help="cut the corpus")
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/lm", help="output folder")
    p.add_argument(
        "--quick", action="store_true", help="a small run in tens of seconds"
    )
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> dict:
    """The run's configuration with the defaults of ``--arch``/``--quick`` filled."""
    cfg = vars(args).copy()
    gpt_arch = cfg["arch"] == "gpt"
    defaults = {
        "layers": 2 if gpt_arch else 1,
        "width": (32 if cfg["quick"] else 64) if gpt_arch else 128,
        "steps": 100 if cfg["quick"] else 1500,
        "warmup": 10 if cfg["quick"] else 100,
        "eval_every": 50 if cfg["quick"] else 250,
        "max_chars": 50_000 if cfg["quick"] else None,
    }
    for name, value in defaults.items():
        if cfg[name] is None:
            cfg[name] = value
    if cfg["quick"]:
        cfg["sample_chars"] = min(cfg["sample_chars"], 80)
    return cfg


def build(cfg: dict, vocab_size: int) -> nn.Block:
    if cfg["arch"] == "gpt":
        return gpt(
            vocab_size, cfg["width"], cfg["heads"], cfg["layers"], cfg["context"]
        )
    return lstm_lm(vocab_size, cfg["width"] // 2, cfg["width"], cfg["layers"])


def loss_and_grad_fn(model: nn.Block, grad: str):
    """``(params, x, y) -> (J, dJ/dθ)``: :func:`fnn.backprop` (the model's
    hand-written backward) or ``jax.grad`` of :func:`fnn.loss`."""
    kw = dict(loss="sequence_cross_entropy", blocks=model)
    if grad == "autodiff":
        return jax.value_and_grad(lambda params, x, y: fnn.loss(params, x, y, **kw))
    return lambda params, x, y: fnn.backprop(params, x, y, **kw)


def unigram_bpc(train_ids: np.ndarray, valid_ids: np.ndarray, V: int) -> float:
    """Validation bits per character of the unigram model p(c) ∝ count(c) + 1."""
    counts = np.bincount(train_ids, minlength=V).astype(np.float64) + 1.0
    log2p = np.log2(counts / counts.sum())
    return float(-np.mean(log2p[valid_ids]))


def make_generate(model: nn.Block, context: int, n_new: int, temperature: float):
    """A jitted ``(params, key, prompt_ids) -> ids`` sampling ``n_new`` characters
    one at a time from softmax(logits / temperature) (greedy at 0), each
    conditioned on the last ``context`` characters."""

    @jax.jit
    def generate(params, key, prompt):
        P = prompt.shape[0]
        seq = jnp.zeros((P + n_new,), jnp.int32).at[:P].set(prompt)

        def step(i, carry):
            seq, key = carry
            pos = P + i
            start = jnp.maximum(pos - context, 0)
            window = jax.lax.dynamic_slice(seq, (start,), (min(context, P + n_new),))
            logits = nn.forward(model, params, window[None])[0][0, pos - 1 - start]
            key, sub = jax.random.split(key)
            if temperature > 0:
                nxt = jax.random.categorical(sub, logits / temperature)
            else:
                nxt = jnp.argmax(logits)
            return seq.at[pos].set(nxt.astype(jnp.int32)), key

        seq, _ = jax.lax.fori_loop(0, n_new, step, (seq, key))
        return seq

    return generate


def plot(history: list[dict], unigram: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(steps, [r["train_bpc"] for r in history], "o-", label="train")
    ax.plot(steps, [r["valid_bpc"] for r in history], "o-", label="validation")
    ax.axhline(unigram, color="gray", ls="--", label="unigram (validation)")
    ax.set(xlabel="step", ylabel="bits per character", title="Character LM")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    cfg = config(parse_args(argv))
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    T, m = cfg["context"], cfg["batch_size"]

    ids, vocab = _text.load_pydoc_chars(cfg["max_chars"])
    train_ids, valid_ids = _text.split_ids(ids, 0.1)
    V = len(vocab)
    unigram = unigram_bpc(train_ids, valid_ids, V)
    # Fixed evaluation windows: every validation character once (non-overlapping
    # windows), and as many training windows spread over the training part.
    x_valid, y_valid = _text.char_windows(valid_ids, T)
    stride = max(T, (len(train_ids) - T - 1) // len(x_valid))
    x_train_eval, y_train_eval = (
        w[: len(x_valid)] for w in _text.char_windows(train_ids, T, stride)
    )

    key = jax.random.key(cfg["seed"])
    k_init, k_train, k_sample = jax.random.split(key, 3)
    model = build(cfg, V)
    params, _ = nn.init(k_init, model, (T,))
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))

    schedule = fnn.schedules.warmup(
        fnn.schedules.cosine_decay_schedule(
            cfg["lr"], max(cfg["steps"] - cfg["warmup"], 1), alpha=0.1
        ),
        cfg["warmup"],
    )
    optimizer = fnn.optim.chain(
        fnn.optim.clip_by_global_norm(1.0),
        fnn.optim.adamw(
            schedule,
            weight_decay=cfg["weight_decay"],
            mask=fnn.optim.weights_only_mask,
        ),
    )
    opt_state = optimizer.init(params)
    loss_and_grad = loss_and_grad_fn(model, cfg["grad"])
    train_dev = jnp.asarray(train_ids)
    loss = sequence_cross_entropy()

    @partial(jax.jit, static_argnums=3)
    def train_chunk(params, opt_state, key, n):
        def step(carry, k):
            params, opt_state = carry
            x, y = _text.random_char_windows(k, train_dev, T, m)
            J, grads = loss_and_grad(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (fnn.optim.apply_updates(params, updates), opt_state), J

        (params, opt_state), Js = jax.lax.scan(
            step, (params, opt_state), jax.random.split(key, n)
        )
        return params, opt_state, jnp.mean(Js)

    @jax.jit
    def mean_loss(params, x, y):
        return loss.fn(nn.forward(model, params, x)[0], y)

    def evaluate(params, x, y, batch=128):
        total = 0.0
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            total += float(mean_loss(params, xb, yb)) * len(xb)
        return total / len(x)

    print(
        f"fnn {fnn.__version__} | pydoc text: {len(train_ids):,} train, "
        f"{len(valid_ids):,} validation characters, vocabulary {V} | "
        f"{cfg['arch']} {cfg['layers']} layer(s), width {cfg['width']}, context "
        f"{T} | {n_params:,} parameters | {cfg['grad']} gradients | unigram "
        f"validation {unigram:.3f} bits/char",
        flush=True,
    )
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    history, step, t0 = [], 0, time.perf_counter()
    while step < cfg["steps"]:
        n = min(cfg["eval_every"], cfg["steps"] - step)
        k_train, k_chunk = jax.random.split(k_train)
        params, opt_state, running = train_chunk(params, opt_state, k_chunk, n)
        step += n
        train_loss = evaluate(params, x_train_eval, y_train_eval)
        valid_loss = evaluate(params, x_valid, y_valid)
        record = {
            "step": step,
            "running_train_loss": float(running),
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "train_bpc": train_loss / LN2,
            "valid_bpc": valid_loss / LN2,
            "learning_rate": float(schedule(jnp.asarray(step, jnp.int32))),
            "seconds": time.perf_counter() - t0,
        }
        if not all(math.isfinite(v) for v in (train_loss, valid_loss)):
            raise FloatingPointError(f"non-finite loss at step {step}: {record}")
        history.append(record)
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        fnn.checkpoint.save(
            out / "checkpoint.fnn",
            {"params": params, "opt_state": opt_state, "step": step},
            metadata=cfg,
        )
        print(
            f"step {step:5d} | train {train_loss:.4f} ({record['train_bpc']:.3f} "
            f"bpc) | validation {valid_loss:.4f} ({record['valid_bpc']:.3f} bpc) | "
            f"{record['seconds']:.1f} s",
            flush=True,
        )
    seconds = time.perf_counter() - t0

    prompt = jnp.asarray(_text.char_ids(PROMPT, vocab)[0])
    generate = make_generate(model, T, cfg["sample_chars"], cfg["temperature"])
    sample = _text.decode_chars(generate(params, k_sample, prompt), vocab)
    final = history[-1]
    summary = {
        "arch": cfg["arch"],
        "grad": cfg["grad"],
        "steps": step,
        "train_loss": final["train_loss"],
        "valid_loss": final["valid_loss"],
        "train_bpc": final["train_bpc"],
        "valid_bpc": final["valid_bpc"],
        "unigram_bpc": unigram,
        "seconds": seconds,
        "parameters": n_params,
        "vocab_size": V,
        "sample": sample,
    }
    fnn.checkpoint.save_model(
        out / "model.fnn",
        model,
        params,
        in_shape=(T,),
        metadata={**cfg, "vocab": vocab, **summary},
    )
    plotted = plot(history, unigram, out / "curves.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsample (temperature {cfg['temperature']}):\n{sample}\n")
    print(
        f"validation {final['valid_bpc']:.3f} bits/char vs unigram {unigram:.3f} | "
        f"train {final['train_bpc']:.3f} bits/char | {step} steps in "
        f"{seconds:.1f} s | {n_params:,} parameters"
    )
    print(
        f"wrote {out}/model.fnn, checkpoint.fnn, metrics.jsonl, summary.json"
        + (", curves.png" if plotted else " (install matplotlib for curves.png)")
    )
    return summary


if __name__ == "__main__":
    main()
