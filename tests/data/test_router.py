"""Task router: keyword rules, reply parsing, a real HTTP server, files and cache."""

import http.server
import json
import os
import threading
import time
import typing

import pytest

from crpo_jax.data import router


@pytest.mark.parametrize(
  "question, route",
  [
    ("What colour is the cube?", "static"),
    ("Which object is to the left of the red ball?", "spatial"),
    ("What happened after the door opened?", "temporal"),
    ("In which direction is the car moving?", "spatiotemporal"),
    ("Which object is on the left at the end of the video?", "spatiotemporal"),
    ("Does the bar GROW or shrink?", "temporal"),
  ],
)
def test_keyword_rules(question, route):
  assert router.keyword_route(question) == route
  assert router.KeywordRouter().route(question) == route


@pytest.mark.parametrize(
  "reply, route",
  [
    ("Temporal", "temporal"),
    ("**Spatiotemporal**", "spatiotemporal"),
    ("spatio-temporal.", "spatiotemporal"),
    ("<think>Is it Spatial? No, order matters.</think>\n\nTemporal", "temporal"),
    ("Hmm, Static would be wrong... </think> Spatial", "spatial"),
    ("Label: Temporal (not Spatial)", "temporal"),
  ],
)
def test_parse_route(reply, route):
  assert router.parse_route(reply) == route


@pytest.mark.parametrize(
  "reply", ["", "I cannot tell.", "<think>Temporal or Spatial, let me", None]
)
def test_parse_route_malformed(reply):
  with pytest.raises(router.MalformedReply):
    router.parse_route(reply)


class _Handler(http.server.BaseHTTPRequestHandler):
  """Scripted endpoint; the first path segment picks the behaviour."""

  calls: typing.ClassVar[dict] = {}
  lock = threading.Lock()

  def log_message(self, *args):  # keep the test output quiet
    pass

  def _reply(self, code: int, body: bytes) -> None:
    try:
      self.send_response(code)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the client timed out and left, as the timeout test intends

  def do_POST(self):
    mode = self.path.strip("/").split("/")[0]
    request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    question = request["messages"][0]["content"].split("Question: ")[1].split("\n")[0]
    with self.lock:
      n = self.calls[mode] = self.calls.get(mode, 0) + 1
    label = "Spatial" if "left" in question else "Static"
    good = json.dumps(
      {"choices": [{"message": {"content": f"<think>hmm</think>{label}"}}]}
    ).encode()
    if mode == "good":
      self._reply(200, good)
    elif mode == "flaky" and n <= 2:
      self._reply(500, b'{"error": "overloaded"}')
    elif mode == "flaky":
      self._reply(200, good)
    elif mode == "malformed":
      bodies = [
        b"not json",
        b'{"choices": []}',
        json.dumps({"choices": [{"message": {"content": "?"}}]}).encode(),
      ]
      self._reply(200, bodies[(n - 1) % 3])
    elif mode == "slow":
      time.sleep(1.0)
      self._reply(200, good)
    else:
      self._reply(404, b'{"error": "no such model"}')


@pytest.fixture(scope="module")
def server():
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  thread.join(timeout=5)


def _router(base, mode, **kw):
  kw = {"timeout": 0.3, "retries": 2, "backoff": 0.01, **kw}
  return router.OpenAIRouter(f"{base}/{mode}/v1", "r1", **kw)


def test_openai_good_reply(server):
  r = _router(server, "good")
  assert r.route("Which box is left of the ball?") == "spatial"
  assert r.route("What colour is it?") == "static"
  assert r.stats["calls_ok"] == 2


def test_openai_retries_500_then_succeeds(server):
  _Handler.calls.pop("flaky", None)
  r = _router(server, "flaky")
  assert r.route("Which box is left of the ball?") == "spatial"
  assert _Handler.calls["flaky"] == 3 and r.stats["retry_HTTPError"] == 2


def test_openai_malformed_replies_fall_back_or_raise(server):
  r = _router(server, "malformed", fallback=router.KeywordRouter())
  assert r.route("In which direction is the car moving?") == "spatiotemporal"
  assert r.stats["retry_MalformedReply"] == 3 and r.stats["fallbacks"] == 1
  with pytest.raises(router.RouterError, match="3 attempts"):
    _router(server, "malformed").route("anything")


def test_openai_timeout(server):
  r = _router(server, "slow", retries=1, fallback=router.KeywordRouter())
  start = time.monotonic()
  assert r.route("What colour is it?") == "static"
  assert time.monotonic() - start < 1.9  # two 0.3 s timeouts, not two 1 s replies
  assert r.stats["fallbacks"] == 1 and r.stats["calls_ok"] == 0


def test_openai_client_error_is_not_retried(server):
  with pytest.raises(router.RouterError, match="404"):
    _router(server, "missing", fallback=router.KeywordRouter()).route("x")


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


RECORDS = [
  {
    "id": "a",
    "video": "a.mp4",
    "question": "Which box is left of the ball?",
    "options": ["x", "y"],
    "answer": "A",
  },
  {
    "id": "b",
    "video": "b.mp4",
    "question": "What colour is it?",
    "options": ["x", "y"],
    "answer": "B",
    "route": "temporal",
  },
  {
    "id": "c",
    "video": "c.mp4",
    "question": "Which box is left of the ball?",
    "options": ["x", "y"],
    "answer": "B",
  },
]


def test_label_file_jsonl_with_http_backend_and_cache(server, tmp_path):
  src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  _write_jsonl(src, RECORDS)
  before = src.read_bytes()
  _Handler.calls.pop("good", None)
  counts = router.label_file(str(src), str(dst), _router(server, "good"), concurrency=4)
  assert src.read_bytes() == before  # the input is never modified
  out = [json.loads(line) for line in dst.read_text().splitlines()]
  assert [r["route"] for r in out] == ["spatial", "static", "spatial"]
  assert [{k: v for k, v in r.items() if k != "route"} for r in out] == [
    {k: v for k, v in r.items() if k != "route"} for r in RECORDS
  ]
  assert counts["routed"] == 2 and _Handler.calls["good"] == 2  # one call per distinct question
  cache = json.loads((tmp_path / "out.jsonl.route_cache.json").read_text())
  assert cache["backend"] == "openai:r1" and len(cache["routes"]) == 2
  # A rerun is served by the cache: no request at all.
  counts = router.label_file(
    str(src),
    str(tmp_path / "again.jsonl"),
    _router(server, "good"),
    cache_path=str(tmp_path / "out.jsonl.route_cache.json"),
  )
  assert counts["routed"] == 0 and counts["cached"] == 3 and _Handler.calls["good"] == 2
  # keep_existing leaves routes already present.
  kw_cache = str(tmp_path / "kw.json")
  router.label_file(
    str(src), str(dst), router.KeywordRouter(), keep_existing=True, cache_path=kw_cache
  )
  assert json.loads(dst.read_text().splitlines()[1])["route"] == "temporal"
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")]  # no temp files left


def test_label_file_video_r1_json_and_cli(tmp_path):
  src, dst = tmp_path / "r1.json", tmp_path / "r1.routed.json"
  items = [
    {
      "problem_id": 1,
      "problem": "What happened after the door opened?",
      "options": ["A. x", "B. y"],
    },
    {"problem_id": 2, "path": "./v.mp4"},
  ]
  src.write_text(json.dumps(items))
  counts = router.main(["--input", str(src), "--output", str(dst), "--backend", "keyword"])
  out = json.loads(dst.read_text())
  assert out[0]["route"] == "temporal" and "route" not in out[1]
  assert counts == {"temporal": 1, "unlabelled": 1, "cached": 0, "routed": 1}


def test_label_file_refuses_in_place_and_foreign_cache(tmp_path):
  src = tmp_path / "in.jsonl"
  _write_jsonl(src, RECORDS)
  with pytest.raises(ValueError, match="never modified"):
    router.label_file(str(src), str(src), router.KeywordRouter())
  router.label_file(
    str(src), str(tmp_path / "o.jsonl"), router.KeywordRouter(), cache_path=str(tmp_path / "c.json")
  )
  with pytest.raises(ValueError, match="backend"):
    router.label_file(
      str(src),
      str(tmp_path / "o2.jsonl"),
      _router("http://127.0.0.1:9", "good"),
      cache_path=str(tmp_path / "c.json"),
    )


@pytest.mark.slow
def test_local_checkpoint_backend_end_to_end(tmp_path):
  """A tiny random Qwen3-VL saved as HF, routed text-only through crpo_jax.generate.

  The random model's reply names no route, so the keyword fallback answers; the
  test checks the load -> chat template -> sample -> decode -> parse path runs.
  """
  import jax.numpy as jnp
  from flax import nnx

  from crpo_jax.data import tokenizer as tokenizer_lib
  from crpo_jax.model import config as config_lib
  from crpo_jax.model import save_hf
  from crpo_jax.model.vlm import Qwen3VL

  question = "In which direction is the car moving?"
  model = Qwen3VL(
    config_lib.get_preset("tiny"), dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
  )
  save_hf(model, tmp_path / "ckpt")
  tokenizer_lib.build_word_tokenizer([router.PROMPT.format(question=question)], tmp_path / "ckpt")
  local = router.LocalCheckpointRouter(
    str(tmp_path / "ckpt"), max_new_tokens=3, dtype="float32", fallback=router.KeywordRouter()
  )
  reply = local.reply(question)
  assert isinstance(reply, str)
  try:  # a random model rarely names a route, but its vocabulary holds the labels
    expected, malformed = router.parse_route(reply), False
  except router.MalformedReply:
    expected, malformed = router.keyword_route(question), True
  assert local.route(question) == expected
  assert local.stats["fallbacks"] == int(malformed) and local.stats["calls_ok"] == int(
    not malformed
  )
  if malformed:
    with pytest.raises(router.MalformedReply):
      router.LocalCheckpointRouter.route(_NoFallback(local), question)


class _NoFallback:
  """The same loaded model, without the keyword fallback."""

  def __init__(self, local):
    self.reply, self.fallback, self.stats = local.reply, None, local.stats
