"""For tests and benchmarks of the engines: a tiny model, and vLLM's processes found by command line.

A tiny Llama-architecture model directory for dummy-weight vLLM runs, built with no download.

`build_tiny_model(path)` writes `config.json` and a byte-level BPE tokenizer trained on the spot
over a generated corpus. vLLM loads it with `load_format="dummy"` (random weights), so answers
are random tokens: use `ignore_eos=True` and a fixed `max_tokens` where lengths matter, or
structured output where the answer's form matters.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]

_SYLLABLES = ("ka lo mi ne ra to su vi de pa gu fe ho ji be ty qu wo xe zo an el in on un "
              "the of and to in is for data row text model token score label filter").split()


def _corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
             for _ in range(2000)]
    out = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
        out.append(sentence + rng.choice([".", "?", "!", ",", ":", "0 1 2 3 4 5 6 7 8 9 10"]))
    return out


def build_tiny_model(path: str | Path, *, layers: int = 2, hidden: int = 128, heads: int = 4,
                     vocab_size: int = 4096, max_position: int = 8192,
                     seed: int = 0) -> Path:
    """Write a tiny Llama model directory (config + tokenizer, no weights) at `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(4000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_position, bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"), pad_token_id=tok.token_to_id("<pad>"),
        tie_word_embeddings=True, torch_dtype="float32",
    )
    config.save_pretrained(path)
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}))
    return path


def command_line(process) -> str:
    """A `psutil.Process`'s command line; empty once it has exited (a killed engine's)."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def is_engine_process(process) -> bool:
    """vLLM's engine core or worker: titled by vLLM, or, where its retitling did not take, a
    process that multiprocessing spawned."""
    return any(mark in command_line(process) for mark in ("VLLM::", "EngineCore", "spawn_main"))

