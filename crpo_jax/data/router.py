"""Offline task router: labels each question with its route (METHOD.md section 3).

  python -m crpo_jax.data.router --input train.jsonl --output train.routed.jsonl \
      --backend openai --base-url http://localhost:8000/v1 --model deepseek-r1

Reads our JSONL schema (data/records.py) or Video-R1 JSON (`problem` instead of
`question`), adds only the `route` field of each record and writes the result
atomically (temp file + os.replace) in the input's format. The input is never
modified. Routes already present are kept unless --overwrite; every existing route
the backend disagrees with is listed in OUTPUT.route_disagreements.jsonl and
summarised on stderr, whether or not it was replaced. The HTTP backends' labels are
cached by question text in a JSON file (default: the output path +
".route_cache.json"), so a rerun or a crash costs no second call.

The API key of the HTTP backend comes from the environment only (the variable
named by --api-key-env, default OPENAI_API_KEY); it is sent in the Authorization
header and written nowhere: not to stdout, the output, the cache or the report.

Backends, one interface (`route(question) -> route`):
* "keyword": a deterministic rule set (`keyword_route`) over the question, and
  the options and answer text where the question alone cannot tell; the offline
  default.
* "openai": any OpenAI-compatible chat-completions endpoint (DeepSeek-R1 as in the
  paper), standard library only: retries with exponential back-off on timeouts,
  connection errors, HTTP 429/5xx and malformed replies; concurrency via threads.
  After the last retry it falls back to the keyword rules (counted in the stats),
  unless --no-fallback.
* "local": a Qwen3-VL checkpoint run text-only and greedily through crpo_jax's
  own sampler (`crpo_jax.generate`), falling back to the keywords likewise.

Routes are written lower case: spatial, temporal, spatiotemporal, static.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

ROUTES = ("spatial", "temporal", "spatiotemporal", "static")

# Keyword rules (ours). A word or phrase matches on word boundaries, any case.
MOTION_WORDS = (
  "move", "moves", "moving", "moved", "motion", "movement", "toward", "towards",
  "away from", "rotate", "rotates", "rotating", "rotation", "turn", "turns", "turning",
  "clockwise", "counterclockwise", "roll", "rolls", "rolling", "fall", "falls",
  "falling", "slide", "slides", "sliding", "trajectory", "approach", "approaches",
  "approaching", "enter", "enters", "entering", "exit", "exits", "leave", "leaves",
  "leaving", "go", "goes", "going", "walk", "walks", "walking", "run", "runs",
  "running", "travel", "travels", "shift", "shifts", "pan", "pans", "zoom", "swipe",
)  # fmt: skip
TEMPORAL_WORDS = (
  "before", "after", "first", "then", "next", "last", "finally", "order", "sequence",
  "earlier", "later", "begin", "begins", "beginning", "end", "ends", "ending", "start",
  "starts", "happen", "happens", "happened", "while", "during", "when", "until",
  "reverse", "reversed", "backward", "backwards", "forward", "forwards", "grow",
  "grows", "shrink", "shrinks", "fill", "fills", "empty", "empties", "appear",
  "appears", "disappear", "disappears", "open", "opens", "close", "closes",
  "increase", "increases", "decrease", "decreases", "how many times", "change",
  "changes", "changed", "previous", "previously", "eventually",
)  # fmt: skip
SPATIAL_WORDS = (
  "left", "right", "above", "below", "under", "over", "behind", "in front",
  "front of", "next to", "beside", "between", "near", "nearest", "far", "farthest",
  "top", "bottom", "position", "located", "location", "where", "side", "closer",
  "closest", "distance", "relative", "corner", "upper", "lower",
)  # fmt: skip


def _pattern(words: Iterable[str]) -> re.Pattern:
  alternatives = sorted((re.escape(w).replace(r"\ ", r"\s+") for w in words), key=len, reverse=True)
  return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


_MOTION, _TEMPORAL, _SPATIAL = (
  _pattern(MOTION_WORDS),
  _pattern(TEMPORAL_WORDS),
  _pattern(SPATIAL_WORDS),
)


VERTICAL_DIRECTIONS = ("up", "down", "upward", "upwards", "downward", "downwards")
_LETTER_PREFIX = re.compile(r"^\s*[A-Z]\s*[.)]\s*")


def _rules(text: str) -> str:
  motion, temporal, spatial = (bool(p.search(text)) for p in (_MOTION, _TEMPORAL, _SPATIAL))
  if motion or (temporal and spatial):
    return "spatiotemporal"
  if temporal:
    return "temporal"
  return "spatial" if spatial else "static"


def keyword_route(question: str, options: Sequence[str] = (), answer: str | None = None) -> str:
  """The deterministic rule set (ours).

  Motion words, or spatial and temporal words together, give spatiotemporal; else
  temporal words give temporal, spatial words spatial, and nothing static. The
  question decides; when it holds no rule word ("What does the red circle do?"),
  the option texts are read instead ("it appears", "it disappears"). A motion
  question whose ground-truth option text is a vertical direction is temporal: a
  mirror flip does not change "up", so only reversal makes a counterfactual.
  """
  route = _rules(question)
  if route == "static" and options:
    route = _rules(" ; ".join(options))
  if (
    route == "spatiotemporal"
    and answer is not None
    and _MOTION.search(question)
    and answer.strip().lower() in VERTICAL_DIRECTIONS
  ):
    route = "temporal"
  return route


class Router(Protocol):
  """A backend: `route(question)` returns one of ROUTES."""

  name: str

  def route(self, question: str) -> str: ...


class KeywordRouter:
  """The keyword rule set as a backend."""

  name = "keyword"

  def route(self, question: str) -> str:
    return keyword_route(question)

  def route_record(self, question: str, options: Sequence[str], answer: str | None) -> str:
    """The route of a whole record: its options and answer text may decide."""
    return keyword_route(question, options, answer)


class RouterError(RuntimeError):
  """A backend could not label a question."""


class MalformedReply(RouterError):
  """The model's reply holds no route label (retried)."""


PROMPT = """You classify questions about a video by what must be perceived to answer them.
- Spatial: where things are in the frame (left/right, above/below, positions); the answer changes if the video is mirrored left-right.
- Temporal: the order, timing or direction of events in time; the answer changes if the video is played backwards.
- Spatiotemporal: motion through space over time (direction of movement, trajectories).
- Static: appearance that neither mirroring nor reversing changes (colour, shape, identity, number of objects).

Question: {question}

Answer with exactly one word: Spatial, Temporal, Spatiotemporal or Static."""

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LABEL = re.compile(r"\b(spatio[\s-]?temporal|spatial|temporal|static)\b", re.IGNORECASE)


def parse_route(reply: str) -> str:
  """The route named by a model reply; raises MalformedReply if it names none.

  R1-style reasoning is dropped first: closed <think>...</think> blocks, and
  everything up to a lone </think> (servers that strip the opening tag). An
  unclosed <think> means the reply was cut off while thinking. The first label in
  what remains wins, so "Temporal (not Spatial)" is temporal.
  """
  if not isinstance(reply, str):
    raise MalformedReply(f"reply is not text: {reply!r}")
  text = _THINK.sub(" ", reply)
  if "</think>" in text.lower():
    text = text[text.lower().rindex("</think>") + len("</think>") :]
  if "<think>" in text.lower():
    raise MalformedReply(f"reply ends inside <think>: {reply[-200:]!r}")
  match = _LABEL.search(text)
  if match is None:
    raise MalformedReply(f"no route label in reply: {reply[-200:]!r}")
  label = re.sub(r"[\s-]", "", match.group(1).lower())
  return label


class OpenAIRouter:
  """An OpenAI-compatible chat-completions endpoint (urllib, thread-safe)."""

  def __init__(
    self,
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 1.0,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    fallback: Router | None = None,
  ):
    self.url = base_url.rstrip("/") + "/chat/completions"
    self.name = f"openai:{model}"
    self.model, self.api_key, self.timeout = model, api_key, timeout
    self.retries, self.backoff = retries, backoff
    self.temperature, self.max_tokens, self.fallback = temperature, max_tokens, fallback
    self.stats = collections.Counter()
    self._lock = threading.Lock()

  def __repr__(self) -> str:  # never the key
    return f"OpenAIRouter({self.url!r}, {self.model!r}, api_key={'set' if self.api_key else None})"

  def _count(self, key: str) -> None:
    with self._lock:
      self.stats[key] += 1

  def _request(self, question: str) -> str:
    body = {
      "model": self.model,
      "messages": [{"role": "user", "content": PROMPT.format(question=question)}],
      "temperature": self.temperature,
    }
    if self.max_tokens is not None:
      body["max_tokens"] = self.max_tokens
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
      raw = resp.read()
    try:
      content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
      raise MalformedReply(f"not a chat-completions reply: {raw[:200]!r}") from e
    return parse_route(content)

  def route(self, question: str) -> str:
    last: Exception | None = None
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.backoff * 2 ** (attempt - 1))
      try:
        label = self._request(question)
        self._count("calls_ok")
        return label
      except urllib.error.HTTPError as e:
        if e.code != 429 and e.code < 500:  # a client error will not fix itself
          raise RouterError(f"{self.url} answered HTTP {e.code}: {e.reason}") from e
        last = e
      except (MalformedReply, urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        last = e
      self._count(f"retry_{type(last).__name__}")
    if self.fallback is None:
      raise RouterError(f"no route after {self.retries + 1} attempts: {last}") from last
    self._count("fallbacks")
    return self.fallback.route(question)


class LocalCheckpointRouter:
  """A local HF-format Qwen3-VL checkpoint, text-only, greedy, via crpo_jax.generate.

  jax, the model and transformers (for the tokenizer) are imported here only, so the
  other backends run without them. Calls are serialised: one model, one device set.
  """

  def __init__(
    self,
    checkpoint: str,
    *,
    max_new_tokens: int = 1024,
    dtype: str = "bfloat16",
    fallback: Router | None = None,
  ):
    import jax.numpy as jnp

    from crpo_jax.data.tokenizer import load_tokenizer
    from crpo_jax.model import load_hf

    self.name = f"local:{os.path.abspath(checkpoint)}"
    self.tokenizer = load_tokenizer(checkpoint)
    self.model = load_hf(checkpoint, jnp.dtype(dtype))
    self.max_new_tokens, self.fallback = max_new_tokens, fallback
    self.stats = collections.Counter()
    self._lock = threading.Lock()

  def reply(self, question: str) -> str:
    """The model's decoded greedy reply to the routing prompt."""
    import numpy as np

    from crpo_jax.rl.sampler import generate

    messages = [
      {"role": "user", "content": [{"type": "text", "text": PROMPT.format(question=question)}]}
    ]
    text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = np.asarray([self.tokenizer.encode(text, add_special_tokens=False)], np.int32)
    with self._lock:
      out = generate(
        self.model,
        {"input_ids": ids, "attention_mask": np.ones_like(ids)},
        max_new_tokens=self.max_new_tokens,
      )
    length = int(out.lengths[0])
    # Keep <think>/</think> (added, non-special tokens) for parse_route.
    return self.tokenizer.decode(np.asarray(out.tokens[0, :length]), skip_special_tokens=True)

  def route(self, question: str) -> str:
    try:
      label = parse_route(self.reply(question))
      self.stats["calls_ok"] += 1
      return label
    except MalformedReply:
      if self.fallback is None:
        raise
      self.stats["fallbacks"] += 1
      return self.fallback.route(question)


class RouteCache:
  """{question text: route} in a JSON file, tagged with the backend that made it."""

  def __init__(self, path: str | None, backend: str):
    self.path, self.backend, self._lock = path, backend, threading.Lock()
    self.routes: dict[str, str] = {}
    if path and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      if data.get("backend") != backend:
        raise ValueError(
          f"cache {path} was made by backend {data.get('backend')!r}, not {backend!r}; "
          "pass another --cache path rather than mixing labels"
        )
      self.routes = dict(data["routes"])

  def get(self, question: str) -> str | None:
    return self.routes.get(question)

  def put(self, question: str, route: str) -> None:
    with self._lock:
      self.routes[question] = route

  def save(self) -> None:
    if self.path:
      with self._lock:
        payload = {"backend": self.backend, "routes": dict(sorted(self.routes.items()))}
      write_atomic(self.path, json.dumps(payload, ensure_ascii=False, indent=1) + "\n")


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temp file in the same folder and os.replace."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def read_dataset(path: str) -> tuple[list[dict[str, Any]], str]:
  """Records and their format ("json" list or "jsonl") of a dataset file."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if text.lstrip().startswith("["):
    return json.loads(text), "json"
  return [json.loads(line) for line in text.splitlines() if line.strip()], "jsonl"


def question_of(record: dict[str, Any]) -> str | None:
  """Our schema's `question`, or Video-R1's `problem`."""
  q = record.get("question", record.get("problem"))
  return q.strip() if isinstance(q, str) and q.strip() else None


_ANSWER_TAG = re.compile(r"<answer>\s*([A-Za-z])\s*</answer>")


def options_and_answer(record: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
  """Option texts (letters stripped) and the ground-truth option's text, where readable.

  The answer is our schema's `answer` letter or Video-R1's `<answer>X</answer>`
  `solution`; anything unreadable gives None (routing then uses the question only).
  """
  raw = record.get("options")
  if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
    return (), None
  options = tuple(_LETTER_PREFIX.sub("", o).strip() for o in raw)
  letter = record.get("answer")
  if not isinstance(letter, str) and isinstance(record.get("solution"), str):
    m = _ANSWER_TAG.search(record["solution"])
    letter = m.group(1) if m else None
  if isinstance(letter, str) and len(letter.strip()) == 1:
    i = ord(letter.strip().upper()) - ord("A")
    if 0 <= i < len(options):
      return options, options[i]
  return options, None


def _existing_route(record: dict[str, Any]) -> str | None:
  route = record.get("route")
  return route.strip().lower() if isinstance(route, str) and route.strip() else None


def label_file(
  input_path: str,
  output_path: str,
  router: Router,
  *,
  cache_path: str | None = None,
  concurrency: int = 8,
  overwrite: bool = False,
  check_existing: bool | None = None,
  save_every: int = 50,
) -> dict[str, int]:
  """Labels the records of `input_path` and writes `output_path` atomically.

  A record that already has a route keeps it unless `overwrite`. Wherever the
  backend's label differs from an existing one, the record is listed in
  OUTPUT.route_disagreements.jsonl (id, question, existing, proposed, applied) and
  counted; nothing changes silently. `check_existing` (default: only for the free
  keyword backend, or with `overwrite`) says whether records that keep their route
  are routed too, for that report.

  The keyword backend routes each record from its question, options and answer
  (no cache: it is free and deterministic); the other backends see the question
  text only, one call per distinct question, through the cache.

  Returns:
    counts, all in records unless named `questions_*`: `records`, one count per
    route written, `unlabelled` (no question text), `added` (had no route),
    `kept` (existing route kept), `overwritten` (existing route replaced by a
    different one), `disagreements`, `questions_routed` (sent to the backend),
    `questions_cached`, plus the backend's own stats.
  """
  if os.path.abspath(input_path) == os.path.abspath(output_path):
    raise ValueError("the output must not be the input: the input is never modified")
  records, fmt = read_dataset(input_path)
  if check_existing is None:
    check_existing = overwrite or isinstance(router, KeywordRouter)
  wanted = [
    question_of(r) is not None and (check_existing or _existing_route(r) is None) for r in records
  ]
  proposed: list[str | None] = [None] * len(records)
  counts = collections.Counter(records=len(records))
  if isinstance(router, KeywordRouter):
    for i, rec in enumerate(records):
      if wanted[i]:
        proposed[i] = router.route_record(question_of(rec), *options_and_answer(rec))
  else:
    cache = RouteCache(cache_path or output_path + ".route_cache.json", router.name)
    todo: dict[str, None] = {}  # ordered set: each distinct question routed once
    for i, rec in enumerate(records):
      if wanted[i] and cache.get(question_of(rec)) is None:
        todo[question_of(rec)] = None
    asked = {question_of(r) for i, r in enumerate(records) if wanted[i]}
    counts["questions_cached"] = len(asked) - len(todo)
    counts["questions_routed"] = len(todo)

    def work(q: str) -> None:
      cache.put(q, router.route(q))

    try:
      with concurrent.futures.ThreadPoolExecutor(max(1, concurrency)) as pool:
        for n, future in enumerate(
          concurrent.futures.as_completed([pool.submit(work, q) for q in todo])
        ):
          future.result()
          if (n + 1) % save_every == 0:
            cache.save()
    finally:
      cache.save()  # what was paid for is kept even if a question failed
    for i, rec in enumerate(records):
      if wanted[i]:
        proposed[i] = cache.get(question_of(rec))

  out, disagreements = [], []
  for rec, new in zip(records, proposed):
    rec, old = dict(rec), _existing_route(rec)
    if question_of(rec) is None:
      counts["unlabelled"] += 1
    elif old is None:
      rec["route"] = new
      counts["added"] += 1
    elif new is not None and new != old:
      disagreements.append(
        {
          "id": rec.get("id", rec.get("problem_id")),
          "question": question_of(rec),
          "existing": old,
          "proposed": new,
          "applied": overwrite,
        }
      )
      if overwrite:
        rec["route"] = new
        counts["overwritten"] += 1
      else:
        counts["kept"] += 1
    else:
      counts["kept"] += 1
    if rec.get("route") is not None:
      counts[str(rec["route"]).lower()] += 1
    out.append(rec)
  counts["disagreements"] = len(disagreements)
  if fmt == "json":
    text = json.dumps(out, ensure_ascii=False, indent=2) + "\n"
  else:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
  write_atomic(output_path, text)
  report = output_path + ".route_disagreements.jsonl"
  if disagreements:
    write_atomic(report, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in disagreements))
  elif os.path.exists(report):
    os.remove(report)  # a stale report from an earlier run would mislead
  counts.update(getattr(router, "stats", {}))
  return dict(counts)


def report_disagreements(counts: dict[str, int], output_path: str, overwrite: bool, file=None):
  """Says on stderr how many existing routes the backend disputes, with examples."""
  file = file or sys.stderr
  n = counts.get("disagreements", 0)
  if not n:
    return
  report = output_path + ".route_disagreements.jsonl"
  with open(report, encoding="utf-8") as f:
    first = [json.loads(line) for line, _ in zip(f, range(5))]
  verb = "replaced (--overwrite)" if overwrite else "kept (pass --overwrite to replace them)"
  print(f"router: {n} existing routes differ from the backend's label; {verb}.", file=file)
  for d in first:
    print(f"  {d['id']}: {d['existing']} -> {d['proposed']}: {d['question'][:80]}", file=file)
  print(f"  all of them: {report}", file=file)


def make_router(args: argparse.Namespace) -> Router:
  """The backend named by the command-line flags."""
  if args.backend == "keyword":
    return KeywordRouter()
  if args.backend == "openai":
    if not args.base_url or not args.model:
      raise SystemExit("--backend openai needs --base-url and --model")
    return OpenAIRouter(
      args.base_url,
      args.model,
      api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
      timeout=args.timeout,
      retries=args.retries,
      max_tokens=args.max_tokens,
      fallback=None if args.no_fallback else KeywordRouter(),
    )
  if not args.checkpoint:
    raise SystemExit("--backend local needs --checkpoint")
  return LocalCheckpointRouter(
    args.checkpoint,
    max_new_tokens=args.max_tokens or 1024,
    fallback=None if args.no_fallback else KeywordRouter(),
  )


def main(argv: list[str] | None = None) -> dict[str, int]:
  p = argparse.ArgumentParser(
    prog="python -m crpo_jax.data.router",
    description=__doc__.split("\n")[0],
    allow_abbrev=False,  # "--api-key" must not abbreviate "--api-key-env"
  )
  argv = sys.argv[1:] if argv is None else list(argv)
  if any(a.split("=")[0] in ("--api-key", "--key", "--token") for a in argv):
    # Refused before argparse, whose error would echo the key to the console.
    p.error("the API key is read from the environment only: see --api-key-env")
  p.add_argument("--input", required=True, help="JSONL (our schema) or Video-R1 JSON list")
  p.add_argument("--output", required=True, help="labelled copy, same format")
  p.add_argument("--backend", choices=("keyword", "openai", "local"), default="keyword")
  p.add_argument("--cache", help="JSON cache path (default: OUTPUT.route_cache.json)")
  p.add_argument("--base-url", help="e.g. http://localhost:8000/v1")
  p.add_argument("--model", help="served model name, e.g. deepseek-reasoner")
  p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
  p.add_argument("--checkpoint", help="HF-format Qwen3-VL directory (--backend local)")
  p.add_argument("--concurrency", type=int, default=8)
  p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
  p.add_argument("--retries", type=int, default=4)
  p.add_argument("--max-tokens", type=int)
  p.add_argument("--no-fallback", action="store_true", help="fail instead of using keywords")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace routes already present (default: keep them; disagreements are reported)",
  )
  args = p.parse_args(argv)
  counts = label_file(
    args.input,
    args.output,
    make_router(args),
    cache_path=args.cache,
    concurrency=args.concurrency,
    overwrite=args.overwrite,
  )
  report_disagreements(counts, args.output, args.overwrite)
  print(json.dumps(counts, sort_keys=True))
  return counts


if __name__ == "__main__":
  main()
