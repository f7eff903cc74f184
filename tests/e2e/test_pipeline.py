"""End-to-end tests of `upstream run`, sessions and the context store: real documents run in real
boxes through the CLI."""

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import time

import pytest

from upstream_e2e import unique_name, wait_until

RESULT_RE = re.compile(r"<!-- upstream:result -->.*?<!-- /upstream:result -->\n?", re.S)
SUMMARY_RE = re.compile(r"<!-- upstream:summary -->.*?<!-- /upstream:summary -->\n\n", re.S)


def doc(tmp_path, text, name="doc.md"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def run(up, path, *args, check=None, timeout=120, cwd=None):
    return up("run", "--progress", "plain", *args, str(path), check=check, timeout=timeout, cwd=cwd)


def results(text):
    """The result sections of a written-back document, in order."""
    return re.findall(r"<!-- upstream:result -->\n(.*?)<!-- /upstream:result -->", text, re.S)


def boxes_labelled(up, key):
    return [b for b in up.ls_json() if key in (b.get("labels") or {})]


# --- running and writing back -------------------------------------------------------------------


def test_steps_run_in_order_and_results_are_written_back(up, tmp_path):
    p = doc(tmp_path, "# Demo\n\n## First\n```bash\necho one\necho err >&2\n```\n\n```python\nprint(2 + 2)\n```\n\n"
            "```js\nconsole.log('node', 6 * 7)\n```\n")
    code, out, err = run(up, p)
    assert code == 0, err
    assert re.search(r"^Step 1: First \.+ done \(\d+\.\ds\)$", out, re.M), out
    assert re.search(r"^Step 2: print\(2 \+ 2\) \.+ done", out, re.M), out
    assert re.search(r"^Step 3: console\.log\('node', 6 \* 7\) \.+ done", out, re.M), out
    text = p.read_text()
    r = results(text)
    assert len(r) == 3
    assert r[0].startswith("**Result:** exit 0 (")
    assert "```text\none\n! err\n```" in r[0]
    assert "\n4\n" in r[1]
    assert "node 42" in r[2]
    assert "<!-- upstream:summary -->" in text and "**succeeded** (3 of 3 steps succeeded)" in text


def test_rerun_replaces_sections_and_preserves_everything_else(up, tmp_path):
    original = ("---\nenv:\n  X: \"1\"\n---\n# Tïtle — ünïcode 🚀\r\n\r\nTrailing spaces   \r\n\r\n"
                "```bash\r\necho $X\r\n```\r\n\r\n```text\r\nleft alone\r\n```\r\nno final newline")
    p = doc(tmp_path, original)
    run(up, p, check=0)
    first = p.read_bytes().decode()
    assert "**Result:** exit 0" in first
    assert "\r\n<!-- upstream:result -->\r\n" in first, "inserted lines use the document's CRLF"
    run(up, p, check=0)
    second = p.read_bytes().decode()
    assert len(results(second.replace("\r\n", "\n"))) == 1
    # Apart from the run id and timings, the second run gives the same document.
    norm = lambda t: re.sub(r"`r[0-9a-f]{11}`|\d+\.\ds|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "*", t)
    assert norm(first) == norm(second)
    # Outside our sections, the bytes are the original ones.
    stripped = SUMMARY_RE.sub("", second.replace("\r\n", "\n"))
    stripped = re.sub(r"\n\n<!-- upstream:result -->.*?<!-- /upstream:result -->", "", stripped, flags=re.S)
    assert stripped == original.replace("\r\n", "\n")
    assert second.endswith("no final newline")


def test_blocks_in_lists_quotes_and_odd_fences(up, tmp_path):
    p = doc(tmp_path, "1. item\n\n   ```bash\n   echo in-list\n   ```\n\n> ```sh\n> echo in-quote\n> ```\n\n"
            "~~~bash\necho tilde\n~~~\n\n````python\nprint('```')\n````\n\n    echo indented-is-not-a-step\n\n"
            "```console\n$ echo not-a-step\n```\n")
    code, out, err = run(up, p)
    assert code == 0, err
    assert out.count(" done (") == 4
    text = p.read_text()
    assert "   <!-- upstream:result -->\n   **Result:** exit 0" in text
    assert "> <!-- upstream:result -->\n> **Result:** exit 0" in text
    assert "in-list" in text and "in-quote" in text and "tilde" in text
    assert "````text\n```\n````" in text
    assert "indented-is-not-a-step\n\n```console" in text


def test_cwd_and_exported_variables_carry_between_steps(up, tmp_path):
    p = doc(tmp_path, "```bash\nmkdir -p work/deep && cd work/deep\nexport STAGE=one\nLOCAL=x\n```\n"
            "```bash\npwd\necho \"stage=$STAGE local=${LOCAL:-unset}\"\nunset STAGE\n```\n"
            "```python\nimport os\nprint(os.getcwd(), os.environ.get('STAGE', 'gone'))\n```\n")
    run(up, p, check=0)
    r = results(p.read_text())
    assert "/home/user/work/deep\nstage=one local=unset" in r[1]
    assert "/home/user/work/deep gone" in r[2]


def test_failure_stops_and_later_steps_are_not_run(up, tmp_path):
    p = doc(tmp_path, "```bash\necho ok\n```\n```bash {name=\"breaks\"}\nfalse\necho not-reached\n```\n```bash\necho later\n```\n")
    code, out, _ = run(up, p)
    assert code == 1
    assert re.search(r"^Step 2: breaks \.+ failed \(exit 1, \d+\.\ds\)$", out, re.M), out
    r = results(p.read_text())
    assert "not-reached" not in r[1]
    assert r[2].startswith("**Result:** not run (an earlier step failed)")
    assert "**failed**" in p.read_text()


def test_failed_step_shows_its_last_errors_and_the_summary_names_it(up, tmp_path):
    p = doc(tmp_path, "```bash\necho fine\n```\n"
            "```bash {name=\"noisy\"}\nfor i in $(seq 1 20); do echo \"err line $i\" >&2; done\n"
            "echo \"out line\"\nexit 3\n```\n")
    code, out, _ = run(up, p)
    assert code == 1
    # Without -v the failed step's last ten lines of standard error are shown under its outcome.
    assert re.search(r"^Step 2: noisy \.+ failed \(exit 3, .*\n    err line 11\n", out, re.M), out
    assert "    err line 20\n" in out and "err line 10\n" not in out and "out line" not in out, out
    assert re.search(r"^Failed: 1 of 2 steps succeeded in .*; failed: step 2 \(noisy\)$", out, re.M), out
    # A failed step with no stderr shows its last output lines instead; -v shows them only once.
    q = doc(tmp_path, "```bash\necho only out\nfalse\n```\n", name="quiet.md")
    code, out, _ = run(up, q)
    assert code == 1 and "\n    only out\n" in out, out
    code, out, _ = run(up, q, "-v")
    assert code == 1 and "\nonly out\n" in out and "    only out" not in out, out


def test_artifact_pattern_matching_nothing_is_warned_of(up, tmp_path):
    p = doc(tmp_path, "---\nartifacts: ['*.csv', 'report.txt']\n---\n```bash\ncd /tmp && echo x > report.txt\n```\n")
    code, out, err = run(up, p)
    assert code == 0, err
    assert re.search(r"Warning: artifact pattern '\*\.csv' matched no file in /\S+", out + err), out + err
    assert "'report.txt' matched no file" in out + err  # it was written elsewhere (/tmp), not where the turn started


def test_on_error_continue_runs_the_rest_but_fails(up, tmp_path):
    p = doc(tmp_path, "---\non_error: continue\n---\n```bash\nexit 4\n```\n```bash\necho still\n```\n")
    code, _, _ = run(up, p)
    assert code == 1
    r = results(p.read_text())
    assert r[0].startswith("**Result:** exit 4")
    assert "still" in r[1]


def test_continue_on_error_and_skip(up, tmp_path):
    p = doc(tmp_path, "```bash {continue_on_error=true}\nexit 3\n```\n```bash {skip}\ntouch /tmp/skipped\n```\n"
            "```bash\ntest ! -e /tmp/skipped && echo fine\n```\n")
    code, out, _ = run(up, p)
    assert code == 0
    assert "allowed to fail" in out and "skipped" in out
    r = results(p.read_text())
    assert r[1].startswith("**Result:** skipped")
    assert "fine" in r[2]


def test_timeout_attribute(up, tmp_path):
    p = doc(tmp_path, "```bash {timeout=1s}\necho before\nsleep 20\n```\n")
    t0 = time.monotonic()
    code, out, _ = run(up, p)
    assert time.monotonic() - t0 < 15
    assert code == 1
    assert "timed out" in out
    assert results(p.read_text())[0].startswith("**Result:** timed out after")


def test_structured_output_and_invalid_json(up, tmp_path):
    p = doc(tmp_path, "```python\nimport json, os\njson.dump({'rows': 3, 'tick': '`'}, open(os.environ['UPSTREAM_OUTPUT'], 'w'))\n```\n"
            "```bash\necho '{not json' > \"$UPSTREAM_OUTPUT\"\n```\n"
            "```bash\necho '[1, 2]' > \"$UPSTREAM_OUTPUT\"\n```\n")
    run(up, p, check=0)
    r = results(p.read_text())
    assert '**Output:** ``{"rows":3,"tick":"`"}``' in r[0]
    assert "does not hold valid JSON" in r[1]
    assert "**Output:** `[1,2]`" in r[2]


def test_long_output_is_cut_with_a_pointer_to_the_whole_log(up, tmp_path):
    if up.remote:
        pytest.skip("--head/--tail are not available over HTTP")
    p = doc(tmp_path, "```bash\nseq 1 10000\n```\n")
    run(up, p, "--head", "3", "--tail", "2", check=0)
    r = results(p.read_text())[0]
    m = re.search(r"1\n2\n3\n\[\.\.\. 9995 lines cut; the whole output: (\S+) \.\.\.\]\n9999\n10000\n", r)
    assert m, r
    log = m.group(1)
    assert os.path.isfile(log)
    with open(log) as f:
        assert sum(1 for _ in f) == 10000


def test_large_output_streams_to_disk(up, tmp_path):
    p = doc(tmp_path, "```bash\nhead -c 60000000 /dev/zero | tr '\\0' 'x' | fold -w 100\n```\n")
    r = subprocess.run(["/usr/bin/time", "-f", "%M", up.binary, "run", "--progress", "none", str(p)],
                       env=up.env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    max_rss_kb = int(r.stderr.decode().strip().splitlines()[-1])
    assert max_rss_kb < 60000, f"upstream run used {max_rss_kb} KiB for 60 MB of output"
    assert "lines cut" in p.read_text()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,where", [
    ("---\nimage: host\ncolour: blue\n---\n```bash\ntrue\n```\n", "doc.md:3:1: front matter: unknown key 'colour'"),
    ("---\ntimeout: [1\n---\n```bash\ntrue\n```\n", "doc.md:3:"),
    ("# x\n```bash {name=\"a\" retries=3}\ntrue\n```\n", "doc.md:2:19: unknown step attribute 'retries'"),
    ("```bash\ntrue\n", "doc.md:1:1: the bash block starting here has no closing fence"),
    ("# nothing to run\n\n```text\nhi\n```\n", "has no steps"),
    ("---\nimage: python:3.12\n---\n```bash\ntrue\n```\n",
     "doc.md:2:8: front matter: unknown image 'python:3.12'"),
    ("---\nenv:\n  A: b\nimage:   no-such-snapshot\n---\n```bash\ntrue\n```\n",
     "doc.md:4:10: front matter: no such snapshot or image: no-such-snapshot"),
])
def test_bad_documents_are_refused_and_left_untouched(up, tmp_path, text, where):
    p = doc(tmp_path, text)
    before = p.read_bytes()
    code, out, err = up("run", "doc.md", cwd=tmp_path)
    assert code == 2, (out, err)
    assert where in err
    assert p.read_bytes() == before
    assert up.ls_json() == [] or all("upstream.run" not in (b.get("labels") or {}) for b in up.ls_json())


def test_missing_directory_and_binary_files(up, tmp_path):
    code, _, err = up("run", str(tmp_path / "nope.md"))
    assert code == 2 and "no such file" in err
    code, _, err = up("run", str(tmp_path))
    assert code == 2 and "is a directory" in err
    b = doc(tmp_path, b"\x7fELF\x00\x01binary", "bin.md")
    code, _, err = up("run", str(b))
    assert code == 2 and "binary file" in err


def test_dry_run_runs_nothing(up, tmp_path):
    p = doc(tmp_path, "```bash {timeout=5s}\ntouch /tmp/x\n```\n```python {skip}\nprint(1)\n```\n")
    before = p.read_bytes()
    out = up.ok("run", "--dry-run", str(p))
    assert "Step 1: touch /tmp/x  [bash, line 1, timeout 5.0s]" in out
    assert "skipped" in out
    assert p.read_bytes() == before
    # Blocks in other languages are listed as skipped; the written-back output blocks are not.
    q = doc(tmp_path, "```bash\necho hi\n```\n\n```ruby\nputs 1\n```\n", name="other.md")
    up.ok("run", str(q))
    out = up.ok("run", "--dry-run", str(q))
    line = q.read_text().splitlines().index("```ruby") + 1
    assert line > 5 and f"Skipped: the ruby block at line {line} (not a step's language)" in out, out
    assert "text block" not in out, out


def test_output_option_leaves_the_document_alone(up, tmp_path):
    p = doc(tmp_path, "```bash\necho elsewhere\n```\n")
    before = p.read_bytes()
    report = tmp_path / "report.md"
    run(up, p, "-o", str(report), check=0)
    assert p.read_bytes() == before
    assert "elsewhere" in report.read_text()


@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
def test_dash_output_is_the_report_on_stdout_alone(up, tmp_path, verbose):
    p = doc(tmp_path, "```bash\necho to-the-report\n```\n")
    before = p.read_bytes()
    code, out, err = run(up, p, "-o", "-", *(["-v"] if verbose else []), cwd=tmp_path)
    assert code == 0, err
    assert not (tmp_path / "-").exists()
    assert p.read_bytes() == before
    # Standard output is the written-back document and nothing else; progress went to stderr.
    assert out.startswith("<!-- upstream:summary -->") and out.endswith("```\n<!-- /upstream:result -->\n")
    assert results(out) and "to-the-report" in results(out)[0]
    assert "Succeeded: 1 of 1" in err and "Succeeded" not in out


def test_dash_document_is_read_from_stdin(up, tmp_path):
    text = "```bash\necho from-stdin\n```\n"
    code, out, err = up("run", "--progress", "plain", "-", input=text, cwd=tmp_path)
    assert code == 0, err
    assert "from-stdin" in results(out)[0] and "Succeeded" in err
    assert os.listdir(tmp_path) == []
    # With -o the report goes to that file instead.
    code, out, err = up("run", "-", "-o", "r.md", input=text, cwd=tmp_path)
    assert code == 0 and "Report written to r.md" in out, (out, err)
    assert "from-stdin" in (tmp_path / "r.md").read_text()
    # A bad document from stdin is named as such.
    code, _, err = up("run", "-", input="```bash\ntrue\n", cwd=tmp_path)
    assert code == 2 and "<stdin>:1:1:" in err


def test_standalone_box_is_removed_unless_kept(up, tmp_path):
    if up.remote:
        pytest.skip("--keep is not available over HTTP")
    p = doc(tmp_path, "```bash\ntrue\n```\n")
    before = {b["id"] for b in boxes_labelled(up, "upstream.run")}
    run(up, p, check=0)
    assert {b["id"] for b in boxes_labelled(up, "upstream.run")} == before
    _, out, _ = run(up, p, "--keep", check=0)
    kept = [b for b in boxes_labelled(up, "upstream.run") if b["id"] not in before]
    assert len(kept) == 1 and kept[0]["name"] in out
    up.rm(kept[0]["id"])


@pytest.mark.parametrize("name", ["doc.md", "notes.markdown"])
def test_document_changed_during_the_run_gets_a_sibling_report(up, tmp_path, name):
    # Over HTTP too, the report is written by the same write-back as a local run's: the same
    # sibling name (stem.RUN.ext), the document's mode kept.
    p = doc(tmp_path, "```bash\nsleep 2\necho done-sleeping\n```\n", name)
    p.chmod(0o640)
    proc = subprocess.Popen([up.binary, "run", "--progress", "plain", str(p)], env=up.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.8)
    edited = p.read_text() + "\nAn edit made while it ran.\n"
    p.write_text(edited)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert p.read_text() == edited
    stem, ext = name.split(".")
    siblings = [f for f in tmp_path.iterdir()
                if re.fullmatch(stem + r"\.r[0-9a-f]{11}\." + ext, f.name)]
    assert len(siblings) == 1, sorted(f.name for f in tmp_path.iterdir())
    assert siblings[0].stat().st_mode & 0o777 == 0o640
    assert "done-sleeping" in siblings[0].read_text()
    assert "changed while the run went on" in out.decode()


def test_interrupt_kills_the_step_tree_and_writes_results(up, tmp_path):
    if up.remote:
        pytest.skip("Ctrl-C over HTTP ends the turn on the server without a local report")
    marker = unique_name("sleeper")
    p = doc(tmp_path, f"```bash\necho started\n(exec -a {marker} sleep 60) &\nsleep 60\n```\n```bash\necho later\n```\n")
    proc = subprocess.Popen([up.binary, "run", "--progress", "plain", str(p)], env=up.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0,
               timeout=20, what="the step's background process")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert b"interrupted" in out
    r = results(p.read_text())
    assert r[0].startswith("**Result:** interrupted after")
    assert "started" in r[0]
    assert r[1].startswith("**Result:** not run (the run was interrupted)")
    wait_until(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0,
               timeout=10, what="the step's processes to be gone")


# --- sessions and the context store -------------------------------------------------------------


def test_two_turn_session(up, tmp_path):
    s = unique_name("sess")
    t1 = doc(tmp_path, f"---\nsession: {s}\nartifacts: data/*.csv\n---\n"
             "```bash\nmkdir -p data && echo 'a,1' > data/x.csv && echo ignore > data/y.txt\n"
             "cd data\nexport TOPIC=birds\necho note > \"$UPSTREAM_ARTIFACTS/note.txt\"\n"
             "apt_marker=/home/user/.installed && touch $apt_marker\n```\n"
             "```python\nimport json, os\njson.dump({'n': 1}, open(os.environ['UPSTREAM_OUTPUT'], 'w'))\n```\n", "t1.md")
    code, out, err = run(up, t1)
    assert code == 0, err
    assert "Context loaded: 0 artifacts from 0 previous turns" in out
    assert "Context: 2 artifacts saved" in out
    t2 = doc(tmp_path, "```bash\npwd\necho \"topic=$TOPIC\"\nls /home/user/.installed\n"
             "cat \"$UPSTREAM_CONTEXT/turn-1/artifacts/data/x.csv\" \"$UPSTREAM_CONTEXT/turn-1/artifacts/note.txt\"\n"
             "python3 -c \"import json,os; m=json.load(open(os.environ['UPSTREAM_CONTEXT']+'/context.json')); "
             "print(m['session'], len(m['turns']), m['turns'][0]['artifacts'][0]['path'])\"\n"
             "cat \"$UPSTREAM_CONTEXT/turn-1/steps/2/result.json\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"result\"])'\n```\n",
             "t2.md")
    code, out, err = run(up, t2, "--session", s)
    assert code == 0, (out, err)
    assert "Context loaded: 2 artifacts from 1 previous turn" in out
    r = results(t2.read_text())[0]
    assert "/home/user/data\ntopic=birds\n/home/user/.installed\na,1\nnote\n" in r
    assert f"{s} 1 turn-1/artifacts/data/x.csv" in r
    assert "{'n': 1}" in r

    ls = up.json("session", "ls")
    assert [x["turns"] for x in ls if x["name"] == s] == [2]
    show = up.json("session", "show", s)
    assert show["box_state"] == "running" and show["cwd"] == "/home/user/data" and show["env"] == {"TOPIC": "birds"}
    ctx = up.json("context", "show", s)
    assert [t["turn"] for t in ctx["turns"]] == [1, 2]
    t = up.json("context", "show", s, "--turn", "1")
    assert t["steps"][1]["result"] == {"n": 1}
    assert sorted(a["path"] for a in t["artifacts"]) == ["data/x.csv", "note.txt"]
    code, _, err = up("context", "show", s, "--turn", "9")
    assert code != 0 and "has no turn 9" in err

    tar_path = tmp_path / "ctx.tar"
    up.ok("context", "export", s, "-o", str(tar_path))
    with tarfile.open(tar_path) as tf:
        names = tf.getnames()
        assert f"{s}/context.json" in names and f"{s}/turn-1/document.md" in names
        assert f"{s}/turn-1/artifacts/data/x.csv" in names
        assert b"session: " + s.encode() in tf.extractfile(f"{s}/turn-1/document.md").read()

    box_id = show["box"]
    up.ok("session", "rm", s)
    assert all(b["id"] != box_id for b in up.ls_json())
    assert all(x["name"] != s for x in up.json("session", "ls"))
    code, _, _ = up("context", "show", s)
    assert code != 0


def test_turn_document_is_the_one_as_run(up, tmp_path):
    s = unique_name("asrun")
    p = doc(tmp_path, "```bash\necho hi\n```\n")
    before = p.read_text()
    run(up, p, "--session", s, check=0)
    t = up.json("session", "show", s)
    home_doc = os.path.join(up.home, "context", "sessions", s, "turn-1", "document.md")
    assert open(home_doc).read() == before
    assert t["turns"][0]["status"] == "succeeded"
    up.ok("session", "rm", s)


def test_session_box_removed_by_hand_gets_a_fresh_box(up, tmp_path):
    s = unique_name("gone")
    p = doc(tmp_path, "```bash\ntouch here\n```\n")
    run(up, p, "--session", s, check=0)
    box = up.json("session", "show", s)["box"]
    up.rm(box)
    code, out, err = run(up, doc(tmp_path, "```bash\nls here || echo missing\n```\n", "t2.md"), "--session", s)
    assert code == 0, err
    assert "starts in a fresh box" in out
    up.ok("session", "rm", s)


def test_bad_session_names_and_unknown_sessions(up, tmp_path):
    p = doc(tmp_path, "```bash\ntrue\n```\n")
    code, _, err = up("run", "--session", "../escape", str(p))
    assert code == 2 and "invalid session name" in err
    code, _, err = up("session", "show", "no-such-session")
    assert code != 0 and "no session" in err
    code, _, err = up("session", "rm", "no-such-session")
    assert code != 0 and "no session" in err


def test_artifacts_keep_regular_files_only(up, tmp_path):
    if up.remote:
        pytest.skip("a standalone run's context is read from the local state directory only")
    p = doc(tmp_path, "---\nartifacts: ['out dir/*.txt', '**/deep.bin']\n---\n"
            "```bash\nmkdir -p 'out dir' a/b && echo x > 'out dir/one two.txt' && head -c 1000 /dev/zero > a/b/deep.bin\n"
            "ln -s /etc/passwd 'out dir/link.txt'\nln -s /etc/passwd \"$UPSTREAM_ARTIFACTS/passwd\"\n"
            "mkdir -p \"$UPSTREAM_ARTIFACTS/sub\" && echo y > \"$UPSTREAM_ARTIFACTS/sub/kept.txt\"\n```\n")
    code, out, err = run(up, p)
    assert code == 0, err
    run_id = re.search(r"\(run (r[0-9a-f]{11})\)", out).group(1)
    t = up.json("context", "show", run_id, "--turn", "1")
    assert sorted((a["path"], a["size"]) for a in t["artifacts"]) == [
        ("a/b/deep.bin", 1000), ("out dir/one two.txt", 2), ("sub/kept.txt", 2)]
