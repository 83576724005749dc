"""`fastattention chat`: an interactive chat in the terminal.

Reads a message per line from stdin, streams the answer to stdout and keeps the conversation.
Ctrl-C while an answer streams stops that answer (what came so far stays in the conversation);
Ctrl-C at the prompt clears the line; /reset forgets the conversation; /exit, /quit or Ctrl-D
(end of input) quits.
"""

from __future__ import annotations

import argparse
import sys

PROMPT = ">>> "
HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D); Ctrl-C stops an answer"


def _read_line():
    """The next input line, None at end of input, "" after Ctrl-C at the prompt."""
    try:
        return input(PROMPT)
    except EOFError:
        print()
        return None
    except KeyboardInterrupt:
        print("\n(Ctrl-C: line cleared; /exit or Ctrl-D quits)")
        return ""


def chat_loop(args: argparse.Namespace) -> int:
    from fastattention.cli import CliError
    from fastattention.session import Session

    session = Session(args.model, args.device, num_threads=args.threads, max_batch=1)
    if session.tokenizer is None:
        raise CliError(f"--model {args.model} has no tokenizer (tokenizer.json); chat needs one")
    if session.tokenizer.chat_template is None:
        raise CliError(
            f"--model {args.model}: its tokenizer has no chat template; chat needs one "
            f"(use `fastattention generate` for plain text)"
        )
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list = []
    print(f"chat with {args.model} ({HELP})", flush=True)
    while True:
        line = _read_line()
        if line is None:
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history.clear()
            print("(conversation cleared)", flush=True)
            continue
        messages = system + history + [{"role": "user", "content": line}]
        pieces = []
        try:
            for piece in session.chat(
                messages,
                args.max_new_tokens,
                stream=True,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
            ):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            print(" [stopped]", flush=True)
        except (ValueError, MemoryError) as e:  # e.g. the conversation outgrew max_seq_len
            print(f"\nerror: {e} (/reset starts a new conversation)", file=sys.stderr, flush=True)
            continue
        else:
            print(flush=True)
        history += [
            {"role": "user", "content": line},
            {"role": "assistant", "content": "".join(pieces)},
        ]
