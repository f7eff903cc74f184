"""A network for a document's box and an image build's: front matter `network:`, `upstream run
--network`, `image build --network` (real traffic to the test internet of netlab.py only)."""

import re

import pytest

from upstream_e2e import unique_name

FETCH = "curl -sS --connect-timeout 3 --max-time 5 {url}"


def document(tmp_path, url, front="", name="doc.md"):
    p = tmp_path / name
    fm = f"---\n{front}---\n\n" if front else ""
    p.write_text(f"{fm}# fetch\n\n```bash\n{FETCH.format(url=url)}\n```\n")
    return p


def run(up, path, *args, timeout=120):
    return up("run", "--progress", "plain", *args, str(path), timeout=timeout)


def test_front_matter_network_reaches_the_test_internet(up, lab, tmp_path):
    url = lab.url(lab.inet_ip, 8080)
    # Without a network the step cannot reach it: loopback only.
    p = document(tmp_path, url, name="none.md")
    rc, out, err = run(up, p)
    assert rc == 1, out + err
    for front in ("network: allow-all\n", f"network:\n  allow_cidrs: [{lab.inet_ip}/32]\n"):
        p = document(tmp_path, url, front)
        rc, out, err = run(up, p)
        assert rc == 0, out + err
        assert "hello from the test internet" in p.read_text()
    # custom allows only what it lists.
    p = document(tmp_path, url, f"network:\n  mode: custom\n  allow_cidrs: [{lab.priv_ip}/32]\n",
                 name="other.md")
    rc, out, err = run(up, p)
    assert rc == 1, out + err


def test_run_network_option_overrides_the_document(up, lab, tmp_path):
    url = lab.url(lab.inet_ip, 8080)
    p = document(tmp_path, url, "network: none\n")
    rc, out, err = run(up, p, "--network", "allow-all")
    assert rc == 0, out + err
    assert "hello from the test internet" in p.read_text()
    rc, out, err = run(up, p, "--network", "custom", "--allow-cidr", f"{lab.inet_ip}/32")
    assert rc == 0, out + err
    rc, out, err = up("run", "--dry-run", "--network", "custom", "--allow-cidr", "198.18.0.0/15",
                      "--allow-domain", "PyPI.org", str(p))
    assert rc == 0, err
    assert "(network custom (pypi.org, 198.18.0.0/15))" in out, out


def test_a_session_box_takes_the_network_a_turn_asks_for(up, lab, tmp_path):
    url = lab.url(lab.inet_ip, 8080)
    session = unique_name("s")
    first = document(tmp_path, url, "on_error: continue\n", name="t1.md")
    rc, out, err = run(up, first, "--session", session)
    assert rc == 1, out + err  # no network yet
    second = document(tmp_path, url, "network: allow-all\n", name="t2.md")
    rc, out, err = run(up, second, "--session", session)
    assert rc == 0, out + err
    assert f"Note: the box of session {session} now has network allow-all (it had none)" in out, out
    assert "hello from the test internet" in second.read_text()
    box = [b for b in up.ls_json() if b["labels"].get("upstream.session", "").endswith(session)]
    assert len(box) == 1 and box[0]["network"] == "allow-all", box
    # A turn that says nothing of the network leaves the box's as it is.
    third = document(tmp_path, url, name="t3.md")
    rc, out, err = run(up, third, "--session", session)
    assert rc == 0 and "now has network" not in out, out + err
    up.ok("session", "rm", session)


@pytest.mark.parametrize("front,message", [
    ("network: open\n", "doc.md:2:10: front matter: invalid network mode 'open'"),
    ("network: [allow-all]\n", "doc.md:2:10: front matter: 'network' must be none, allow-all or custom"),
    ("network:\n  headers: {a: b}\n", "doc.md:3:3: front matter: unknown network setting 'headers'"),
    ("network:\n  mode: allow-all\n  allow_domains: [pypi.org]\n",
     "doc.md:3:3: front matter: network: allowed domains and allowed or denied CIDRs apply to network mode custom, not allow-all"),
    ("network:\n  allow_cidrs: [10.0.0.0/33]\n", "doc.md:3:3: front matter: network: invalid allowed CIDR '10.0.0.0/33'"),
])
def test_a_bad_network_is_a_document_error(up, tmp_path, front, message):
    p = document(tmp_path, "http://127.0.0.1:1/", front)
    before = p.read_bytes()
    rc, out, err = run(up, p)
    assert rc == 2, out + err
    assert message in err, err
    assert p.read_bytes() == before
    assert up.ls_json() == []


def test_bad_network_options_are_refused_by_name(up, tmp_path):
    p = document(tmp_path, "http://127.0.0.1:1/")
    rc, out, err = run(up, p, "--allow-domain", "pypi.org")
    assert rc == 2 and "apply to network mode custom, not none" in err, out + err
    rc, out, err = run(up, p, "--network", "open")
    assert rc == 2 and "invalid network mode 'open'" in err, out + err
    rc, out, err = up("image", "build", "img", "--run", "true", "--network", "custom",
                      "--allow-cidr", "300.0.0.0/8")
    assert rc != 0 and "invalid allowed CIDR '300.0.0.0/8'" in err, out + err
    assert up.ls_json() == []


def test_image_build_with_a_network(up, lab, tmp_path):
    url = lab.url(lab.inet_ip, 8080)
    name = unique_name("img")
    rc, out, err = up("image", "build", name, "--run", FETCH.format(url=url) + " > /srv/fetched",
                      timeout=120)
    assert rc != 0 and "no image was saved" in err, out + err
    rc, out, err = up("image", "build", name, "--network", "allow-all", "--run",
                      FETCH.format(url=url) + " > /srv/fetched", timeout=120)
    assert rc == 0, out + err
    # The document's own network, too.
    p = document(tmp_path, url, "network: allow-all\n")
    rc, out, err = up("image", "build", name + "-doc", str(p), timeout=120)
    assert rc == 0, out + err
    # The image keeps the files, not the network.
    box, bname = up.create("--image", name)
    try:
        assert up.inspect(bname)["network"] == "none"
        assert up.ok("box", "exec", bname, "--", "cat", "/srv/fetched") == "hello from the test internet\n"
    finally:
        up.rm(box)
    for n in (name, name + "-doc"):
        up.ok("image", "rm", n)
