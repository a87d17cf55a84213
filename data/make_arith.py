"""Generate data/arith.jsonl: one-step add/subtract word problems with single-digit numbers.

Seeded and deterministic: `python data/make_arith.py` rewrites the same file byte for byte.
Each record carries its arithmetic `fact` (operation and unordered operand pair for +), so the
held-out split can be made by fact: no fact asked in eval appears in any training question.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Tom", "Sara", "Ali", "Mia", "Ben", "Lena", "Omar", "Jade", "Ravi", "Nora", "Eli", "Zoe"]
OBJECTS = [
    "apples",
    "pencils",
    "marbles",
    "cookies",
    "stickers",
    "books",
    "cards",
    "shells",
    "coins",
    "balloons",
    "stamps",
    "toy cars",
]
ADD = [
    "{n} has {a} {o}. {n} gets {b} more {o}. How many {o} does {n} have now?",
    "There are {a} {o} on a table. {n} puts {b} more {o} on the table. How many {o} are on the table now?",
    "{n} found {a} {o} in the morning and {b} {o} in the afternoon. How many {o} did {n} find in all?",
    "A box holds {a} {o}. {n} adds {b} {o} to the box. How many {o} are in the box?",
]
SUB = [
    "{n} has {a} {o}. {n} gives away {b} {o}. How many {o} does {n} have left?",
    "There are {a} {o} in a bag. {n} takes out {b} {o}. How many {o} are still in the bag?",
    "{n} had {a} {o} and lost {b} of them. How many {o} does {n} have now?",
    "A shelf has {a} {o}. {n} sells {b} {o}. How many {o} are left on the shelf?",
]
PER_FACT = 12


def facts() -> list[tuple[str, int, int]]:
    out = []
    for a in range(1, 10):
        for b in range(1, 10):
            if a <= b:
                out.append(("add", a, b))  # commutative: one fact covers a+b and b+a
            if a >= b:
                out.append(("sub", a, b))
    return out


def main() -> None:
    rng = random.Random(20261123)
    # A question whose exact text came up before gets another name and object from a second
    # generator: a repeated text is one prompt for two ids, which distill refuses, and the
    # first generator's draws (so every other row) stay as they were.
    again = random.Random(7)
    seen: set[str] = set()
    rows = []
    for op, x, y in facts():
        for k in range(PER_FACT):
            n, o = rng.choice(NAMES), rng.choice(OBJECTS)
            if op == "add":
                a, b = (x, y) if k % 2 == 0 else (y, x)
                template, answer = rng.choice(ADD), a + b
                fact = f"add:{x}+{y}"
            else:
                a, b = x, y
                template, answer = rng.choice(SUB), a - b
                fact = f"sub:{x}-{y}"
            text = template.format(n=n, o=o, a=a, b=b)
            while text in seen:
                n, o = again.choice(NAMES), again.choice(OBJECTS)
                text = template.format(n=n, o=o, a=a, b=b)
            seen.add(text)
            rows.append(
                {
                    "id": f"arith-{len(rows):05d}",
                    "question": text,
                    "answer": str(answer),
                    "fact": fact,
                }
            )
    out = Path(__file__).with_name("arith.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} questions over {len(facts())} facts to {out}")


if __name__ == "__main__":
    main()
