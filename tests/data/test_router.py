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
  assert [r["route"] for r in out] == ["spatial", "temporal", "spatial"]  # kept by default
  assert [{k: v for k, v in r.items() if k != "route"} for r in out] == [
    {k: v for k, v in r.items() if k != "route"} for r in RECORDS
  ]
  # One call per distinct question; the labelled record is not sent (no --overwrite).
  assert counts["questions_routed"] == 1 and _Handler.calls["good"] == 1
  assert counts["records"] == 3 and counts["spatial"] == 2 and counts["temporal"] == 1
  cache = json.loads((tmp_path / "out.jsonl.route_cache.json").read_text())
  assert cache["backend"] == "openai:r1" and len(cache["routes"]) == 1
  # A rerun is served by the cache: no request at all.
  counts = router.label_file(
    str(src),
    str(tmp_path / "again.jsonl"),
    _router(server, "good"),
    cache_path=str(tmp_path / "out.jsonl.route_cache.json"),
  )
  assert counts["questions_routed"] == 0 and counts["questions_cached"] == 1
  assert _Handler.calls["good"] == 1
  # --overwrite routes the labelled record too, replaces its route and reports it.
  counts = router.label_file(str(src), str(dst), _router(server, "good"), overwrite=True)
  assert json.loads(dst.read_text().splitlines()[1])["route"] == "static"
  assert counts["overwritten"] == 1 and counts["disagreements"] == 1
  report = [
    json.loads(x)
    for x in (tmp_path / "out.jsonl.route_disagreements.jsonl").read_text().splitlines()
  ]
  assert report == [
    {
      "id": "b",
      "question": "What colour is it?",
      "existing": "temporal",
      "proposed": "static",
      "applied": True,
    }
  ]
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
  assert counts == {"records": 2, "temporal": 1, "unlabelled": 1, "added": 1, "disagreements": 0}


def test_label_file_refuses_in_place_and_foreign_cache(tmp_path):
  src = tmp_path / "in.jsonl"
  _write_jsonl(src, RECORDS)
  with pytest.raises(ValueError, match="never modified"):
    router.label_file(str(src), str(src), router.KeywordRouter())
  (tmp_path / "c.json").write_text(json.dumps({"backend": "openai:other", "routes": {}}))
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


def test_keyword_rules_agree_with_every_synthetic_family(tmp_path):
  """The generator's labels are the truth for its own questions: 100% agreement.

  Over a world large enough to hold every family and variant (up/down and
  left/right motion, grow/fill/appear, colour/shape/count), with the null option
  dropped from some option lists, routed from a file with the routes removed.
  """
  from crpo_jax.data import synthetic

  records = []
  for i in range(400):
    rec = synthetic.make_clip(i, 3, split="train", null_cf=0.5)[1]
    records.append(dict(rec, video=f"{rec['id']}.mp4"))
  variants = {(r["category"], r["route"], " ".join(r["question"].split()[:2])) for r in records}
  assert {v[:2] for v in variants} == {
    ("moving_direction", "spatiotemporal"),
    ("moving_direction", "temporal"),
    ("reversible_dynamics", "temporal"),
    ("event_order", "temporal"),
    ("spatial_relation", "spatial"),
    ("static", "static"),
  }
  assert (
    len({v for v in variants if v[0] == "reversible_dynamics"}) == 3
  )  # How does / What happens / What does
  src, dst = tmp_path / "world.jsonl", tmp_path / "routed.jsonl"
  _write_jsonl(src, [{k: v for k, v in r.items() if k != "route"} for r in records])
  counts = router.main(["--input", str(src), "--output", str(dst)])
  routed = [json.loads(line)["route"] for line in dst.read_text().splitlines()]
  wrong = [(r["question"], r["route"], got) for r, got in zip(records, routed) if got != r["route"]]
  assert wrong == []
  assert counts["records"] == counts["added"] == 400
  assert sum(counts[r] for r in router.ROUTES) == 400  # stats count records, not questions


def test_existing_routes_kept_and_disagreements_reported(tmp_path, capsys):
  records = [
    dict(RECORDS[0], route="static"),  # the keywords say spatial
    dict(RECORDS[1], route="static"),  # agrees
    {k: v for k, v in RECORDS[2].items()},  # no route
  ]
  src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  _write_jsonl(src, records)
  counts = router.main(["--input", str(src), "--output", str(dst)])
  assert [json.loads(x)["route"] for x in dst.read_text().splitlines()] == [
    "static",
    "static",
    "spatial",
  ]
  assert counts["kept"] == 2 and counts["added"] == 1 and counts["disagreements"] == 1
  err = capsys.readouterr().err
  assert "1 existing routes differ" in err and "a: static -> spatial" in err
  assert "--overwrite" in err
  report = str(dst) + ".route_disagreements.jsonl"
  assert json.loads(open_text(report))["applied"] is False
  counts = router.main(["--input", str(src), "--output", str(dst), "--overwrite"])
  assert json.loads(dst.read_text().splitlines()[0])["route"] == "spatial"
  assert counts["overwritten"] == 1 and json.loads(open_text(report))["applied"] is True
  # Once the file agrees, the stale report goes.
  router.main(["--input", str(dst), "--output", str(tmp_path / "again.jsonl")])
  assert not os.path.exists(str(tmp_path / "again.jsonl") + ".route_disagreements.jsonl")


def test_api_key_from_environment_only_and_never_written(server, tmp_path, monkeypatch, capsys):
  """Issue 14 item 10: the key is sent, and appears in no file the run writes."""
  secret = "sk-test-5f1c0ffee0ddba11"
  seen = []
  original = _Handler.do_POST

  def spy(self):
    seen.append(self.headers.get("Authorization"))
    original(self)

  monkeypatch.setattr(_Handler, "do_POST", spy)
  monkeypatch.setenv("CRPO_ROUTER_KEY", secret)
  src, out_dir = tmp_path / "in.jsonl", tmp_path / "out"
  out_dir.mkdir()
  _write_jsonl(src, [dict(RECORDS[0], route="static"), RECORDS[1]])
  args = ["--input", str(src), "--output", str(out_dir / "o.jsonl"), "--backend", "openai"]
  args += ["--base-url", f"{server}/good/v1", "--model", "r1", "--api-key-env", "CRPO_ROUTER_KEY"]
  router.main([*args, "--overwrite"])
  assert seen and set(seen) == {f"Bearer {secret}"}
  with pytest.raises(SystemExit):  # there is no flag that takes the key itself
    router.main([*args, "--api-key", secret])
  printed = capsys.readouterr()
  written = sorted(p for p in out_dir.rglob("*") if p.is_file())
  assert {p.name for p in written} >= {
    "o.jsonl",
    "o.jsonl.route_cache.json",
    "o.jsonl.route_disagreements.jsonl",
  }
  for p in written:
    assert secret not in p.read_text(), p
  assert secret not in printed.out + printed.err
  assert secret not in repr(router.make_router(router_args(args)))


def open_text(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def router_args(argv):
  """The argparse namespace `main` builds, for make_router."""
  import argparse

  p = argparse.ArgumentParser()
  for flag in ("--input", "--output", "--backend", "--base-url", "--model", "--api-key-env"):
    p.add_argument(flag)
  ns = p.parse_args(argv)
  ns.timeout, ns.retries, ns.max_tokens, ns.no_fallback = 1.0, 0, None, False
  return ns
