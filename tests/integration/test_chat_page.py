"""The built-in chat page (GET /, issue 14.5) in a real headless browser against the real
server: Debian's chromium driven through chromedriver by the selenium package (PyPI,
installed by `make pydeps` into the venv $CORVID_VENV, as the openai SDK test does;
SKIP naming `make pydeps` without it), corvid-server with the HTTP API on a free
loopback port, a JWT auth policy and the real Qwen2.5-Coder 0.5B Instruct (SKIP naming
`make models` without it).

The page is loaded and shows the 401 of GET /v1/models until a token is typed in; then
a version is picked from the list, a prompt is sent with Enter and the answer is watched
growing while it streams; a long generation is stopped mid-stream with the Stop button
and the server must have cancelled it (its sequence gone and its token count frozen in
/metrics well short of max_tokens); after New chat, text the model writes between
<think> markers arrives as reasoning_content and is shown folded away; with the RAG box
ticked the citations of a small knowledge base (corvid-index) show before any answer
text, as links for http(s) URLs and as plain text for a javascript: one. The browser's
console must stay free of errors (a CSP violation or a script error would show there),
and a remote load added by script must be refused by the CSP. A screenshot is kept as an
artifact: $CORVID_BUILD/artifacts/chat_page.png (the path is printed).

chromedriver is started by the test on a free port (spawn(): it dies with the test);
Chromium is its child and is killed by PID at the end, whatever happened.
"""
import json
import os
import sys

from corvid_venv import need

need("selenium", "the chat page in a browser")

import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.command import Command  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from corvid_testlib import BIN, QWEN, ROOT, TMP, Checks, Server, free_port, have_model, spawn  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = os.path.join(os.environ.get("CORVID_BUILD") or os.path.join(ROOT, "build"), "artifacts")
WAIT = 30  # seconds for any one thing the page must show
# The checks that generate: named like the other 0.5B checks that `make asan` / `make tsan`
# leave out (SAN_SKIP_CHECKS; under ASan Qwen's first token took 17 s here).
GEN = "Qwen2.5-Coder 0.5B: "


def descendants(pid):
    """PIDs of every process below pid (from /proc)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, stack = [], [pid]  # depth-first over the parent -> children map
    while stack:
        for k in kids.get(stack.pop(), []):
            out.append(k)
            stack.append(k)
    return out


class Browser:
    """chromedriver (spawned) driving a headless Chromium with a temp profile."""

    def __init__(self):
        port = free_port()
        self.profile = os.path.join(TMP, "chromium")
        self.log = open(os.path.join(TMP, "chromedriver.log"), "wb")
        self.proc = spawn([CHROMEDRIVER, "--port=%d" % port], stdout=self.log, stderr=subprocess.STDOUT)
        self.d = None
        try:
            url = "http://127.0.0.1:%d" % port
            deadline = time.time() + WAIT
            while True:
                try:
                    urllib.request.urlopen(url + "/status", timeout=1).read()
                    break
                except OSError:
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("chromedriver did not start")
                    time.sleep(0.1)
            o = webdriver.ChromeOptions()
            o.binary_location = CHROMIUM
            for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                      "--disable-crash-reporter", "--disable-breakpad", "--no-first-run",
                      "--window-size=1100,900", "--user-data-dir=" + self.profile):
                o.add_argument(a)
            o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            self.d = webdriver.Remote(command_executor=url, options=o)
        except BaseException:
            self.close()
            raise

    def errors(self):
        """The console's SEVERE entries since the last call (chromedriver's log endpoint:
        webdriver.Remote has no get_log of its own)."""
        log = self.d.execute(Command.GET_LOG, {"type": "browser"})["value"]
        return [e["message"] for e in log if e["level"] == "SEVERE"]

    def close(self):
        """Ends the session, then kills by PID whatever is left of chromedriver's tree."""
        pids = descendants(self.proc.pid)
        if self.d:
            try:
                self.d.quit()
            except Exception as e:  # the kills below still run
                print("selenium quit: %s" % e)
        for pid in pids + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)  # 2-3 MB of browser profile
        left = [p for p in pids if os.path.exists("/proc/%d" % p) and not zombie(p)]
        if left:
            raise RuntimeError("browser processes left: %s" % left)


def zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def metric_sum(port, name, **labels):
    """The sum of a /metrics series' samples whose labels include the given ones."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
        if m and all('%s="%s"' % kv in m.group(1) for kv in labels.items()):
            total += float(m.group(2))
    return total


def main():
    # The instruction-tuned Qwen follows a chat (the Gemma 3 270M file is a base model).
    model = QWEN
    if not have_model(model, "the chat page in a browser (Qwen2.5-Coder 0.5B)"):
        print("0 passed, 0 failed")
        return 0
    checks = Checks()
    version = "chat-v1"
    # Auth on: the page itself is public, the API wants a JWT, which the user types in.
    secret, policy = os.path.join(TMP, "jwt-hs256.secret"), os.path.join(TMP, "auth.json")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256", "secret_file": secret}]}}, f)
    token = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "data", "auth", "mint_jwt.py"), "--alg",
                            "HS256", "--key", secret, "--kid", "hs", "--ttl", "600",
                            json.dumps({"sub": "chat-page-test", "scope": "inference"})],
                           capture_output=True, text=True, check=True).stdout.strip()
    # A knowledge base of two documents: one with a web URL, one whose "URL" is script.
    docs = os.path.join(TMP, "docs.jsonl")
    with open(docs, "w") as f:
        for doc in ({"id": "mascot", "title": "Project mascot", "url": "https://docs.example/mascot",
                     "text": "The corvid project's mascot is a raven named Quill."},
                    {"id": "hat", "title": "Mascot hat", "url": "javascript:alert(1)",
                     "text": "The corvid project's mascot wears a green hat on release posters."}):
            f.write(json.dumps(doc) + "\n")
    kb = os.path.join(TMP, "docs.cvidx")
    subprocess.run([os.path.join(BIN, "corvid-index"), "build", docs, "-o", kb], check=True, capture_output=True)
    http_port, metrics_port = free_port(), free_port()
    server = Server("--model", model, "--model-version", version, "--http-listen", "127.0.0.1:%d" % http_port,
                    "--metrics-listen", "127.0.0.1:%d" % metrics_port, "--auth-config", policy,
                    "--rag-kb", "docs=" + kb)
    base = "http://127.0.0.1:%d" % http_port
    browser = None
    try:
        browser = Browser()
        d = browser.d

        def wait_for(what, fn, timeout=WAIT):
            return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: fn(), message=what)

        def answers():
            return d.find_elements(By.CSS_SELECTOR, "#log li.assistant")

        def page_headers():
            resp = urllib.request.urlopen(base + "/", timeout=5)
            csp = resp.headers.get("Content-Security-Policy", "")
            assert resp.headers.get("Content-Type") == "text/html; charset=utf-8", resp.headers.get("Content-Type")
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
            for path, ctype in (("/chat/app.js", "text/javascript"), ("/chat/style.css", "text/css")):
                got = urllib.request.urlopen(base + path, timeout=5).headers.get("Content-Type", "")
                assert got.startswith(ctype), (path, got)

        def pick_model():
            d.get(base + "/")
            assert d.title == "corvid chat", d.title
            status = d.find_element(By.ID, "model-status")
            wait_for("the 401 shown", lambda: "401" in status.text)
            assert "token" in status.text and not d.find_elements(By.CSS_SELECTOR, "#model option"), status.text
            # The browser logs the refused fetch; nothing else may be in the console.
            errs = browser.errors()
            assert len(errs) == 1 and "/v1/models" in errs[0] and "401" in errs[0], errs
            d.find_element(By.ID, "token").send_keys(token, Keys.TAB)
            # The page's list is the server's GET /v1/models: the model name, then the version.
            wait_for("the model list", lambda: len(d.find_elements(By.CSS_SELECTOR, "#model option")) >= 2)
            values = [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#model option")]
            assert version in values, values
            Select(d.find_element(By.ID, "model")).select_by_value(version)

        def send(prompt, max_tokens):
            box = d.find_element(By.ID, "max-tokens")
            box.clear()
            box.send_keys(str(max_tokens))
            temp = d.find_element(By.ID, "temperature")
            temp.clear()
            temp.send_keys("0")
            d.find_element(By.ID, "prompt").send_keys(prompt, Keys.ENTER)
            wait_for("the answer's entry", lambda: len(answers()) >= 1 and answers()[-1].get_attribute("aria-busy"))
            return answers()[-1]

        def streamed_answer():
            before = metric_sum(metrics_port, "corvid_generated_tokens_total")
            # Every length the answer's text takes on screen, recorded in the page as it
            # changes: a streamed answer grows in steps, a whole one would appear at once.
            d.execute_script("window.lens = []; new MutationObserver(() => {"
                             " const c = document.querySelector('#log li.assistant:last-child .content');"
                             " if (c && c.textContent.length !== window.lens[window.lens.length - 1])"
                             "  window.lens.push(c.textContent.length);"
                             "}).observe(document.getElementById('log'),"
                             " {subtree: true, childList: true, characterData: true});")
            msg = send("Name three colours of the rainbow.", 40)
            content = msg.find_element(By.CLASS_NAME, "content")
            wait_for("the end of the answer", lambda: msg.get_attribute("data-finish"))
            assert msg.get_attribute("data-finish") in ("stop", "length"), msg.get_attribute("data-finish")
            text = content.text
            lens = [n for n in d.execute_script("return window.lens") if n]
            assert len(lens) >= 3 and lens == sorted(lens) and lens[-1] == len(text), (lens, text)
            meta = msg.find_element(By.CLASS_NAME, "meta").text
            assert meta.startswith(version + " ·") and " tokens" in meta, meta
            assert d.find_element(By.ID, "send").is_enabled() and not d.find_element(By.ID, "stop").is_enabled()
            used = metric_sum(metrics_port, "corvid_generated_tokens_total") - before
            assert 0 < used <= 40, used
            print("  answer (%d tokens, shown in %d steps): %r" % (used, len(lens), text[:80]))

        def reasoning_folded():
            # Qwen2.5-Coder is no reasoning model, but asked to it copies <think>...</think>
            # (greedy), which the server streams as reasoning_content: the page folds it away.
            d.find_element(By.ID, "clear").click()
            wait_for("an empty conversation", lambda: not answers())
            msg = send('Output the string "<think>2+3 is 5</think>The answer is 5." and nothing else.', 60)
            wait_for("the end of the answer", lambda: msg.get_attribute("data-finish"))
            details = msg.find_element(By.CSS_SELECTOR, "details.reasoning")
            body = details.find_element(By.TAG_NAME, "div")
            reasoning = body.get_attribute("textContent")
            content = msg.find_element(By.CLASS_NAME, "content").get_attribute("textContent")
            assert reasoning == "2+3 is 5" and content == "The answer is 5.", (reasoning, content)
            assert details.get_attribute("open") is None and not body.is_displayed()
            details.find_element(By.TAG_NAME, "summary").click()
            wait_for("the reasoning unfolded", body.is_displayed)
            print("  reasoning %r, answer %r" % (reasoning[:60], content[:60]))

        def citations_as_links():
            d.find_element(By.ID, "clear").click()
            d.find_element(By.ID, "rag").click()
            # How much answer text was on screen when the sources appeared: none (first event).
            d.execute_script("window.citedAt = null; new MutationObserver(() => {"
                             " const m = document.querySelector('#log li.assistant:last-child');"
                             " if (window.citedAt === null && m && m.querySelector('ol.citations'))"
                             "  window.citedAt = m.querySelector('.content').textContent.length;"
                             "}).observe(document.getElementById('log'), {subtree: true, childList: true});")
            msg = send("What is the name of the corvid project's mascot, and what does the mascot wear?", 16)
            wait_for("the end of the answer", lambda: msg.get_attribute("data-finish"))
            d.find_element(By.ID, "rag").click()
            items = msg.find_elements(By.CSS_SELECTOR, "ol.citations li")
            assert [i.text for i in items] == ["Project mascot (kb:docs)", "Mascot hat (kb:docs)"], \
                [i.text for i in items]
            link = items[0].find_element(By.TAG_NAME, "a")
            assert link.get_attribute("href") == "https://docs.example/mascot", link.get_attribute("href")
            assert link.get_attribute("rel") == "noopener noreferrer" and link.get_attribute("target") == "_blank"
            assert not items[1].find_elements(By.TAG_NAME, "a"), "a javascript: URL became a link"
            assert d.execute_script("return window.citedAt") == 0, d.execute_script("return window.citedAt")
            answer = msg.find_element(By.CLASS_NAME, "content").text
            assert "Quill" in answer, answer
            print("  answer %r" % answer[:80])

        def stop_mid_stream():
            before = metric_sum(metrics_port, "corvid_generated_tokens_total")
            msg = send("Count from 1 to 1000, one number per line.", 3000)
            content = msg.find_element(By.CLASS_NAME, "content")
            wait_for("some streamed text", lambda: len(content.text) >= 20)
            assert msg.get_attribute("aria-busy")
            d.find_element(By.ID, "stop").click()
            wait_for("the stopped state", lambda: msg.get_attribute("data-finish") == "stopped")
            shown = content.text
            # The server cancelled the sequence: none runs any more and the token count
            # stops growing, far short of max_tokens.
            wait_for("the sequence to end on the server",
                     lambda: metric_sum(metrics_port, "corvid_running_sequences") == 0, timeout=5)
            t1 = metric_sum(metrics_port, "corvid_generated_tokens_total")
            time.sleep(0.5)
            t2 = metric_sum(metrics_port, "corvid_generated_tokens_total")
            assert t1 == t2 and 0 < t2 - before < 3000, (before, t1, t2)
            assert content.text == shown, "text kept arriving after Stop"
            assert "stopped by you" in msg.find_element(By.CLASS_NAME, "meta").text
            print("  stopped after %d tokens, %d characters shown" % (t2 - before, len(shown)))

        def console_clean():
            errs = browser.errors()  # since the expected 401 (pick_model)
            assert not errs, errs

        def csp_blocks_remote_loads():
            # The check above would see a violation: a remote image added by script is
            # refused by the page's CSP and the refusal is logged.
            d.execute_script("const i = document.createElement('img');"
                             "i.src = 'http://192.0.2.1/x.png'; document.body.append(i);")
            refused = wait_for("the CSP refusal in the console",
                               lambda: [e for e in browser.errors() if "Content Security Policy" in e], timeout=5)
            assert "192.0.2.1" in refused[0], refused

        def screenshot():
            os.makedirs(ARTIFACTS, exist_ok=True)
            path = os.path.join(ARTIFACTS, "chat_page.png")
            assert d.save_screenshot(path)
            assert os.path.getsize(path) > 1000
            print("  screenshot: %s" % path)

        checks.run("GET / and its assets: types and the CSP header", page_headers)
        checks.run("the page asks for a token, then lists the served versions; one is picked", pick_model)
        checks.run(GEN + "a prompt sent with Enter streams its answer", streamed_answer)
        checks.run(GEN + "Stop mid-stream ends the generation on the server", stop_mid_stream)
        checks.run(GEN + "New chat; reasoning_content is shown folded away", reasoning_folded)
        checks.run(GEN + "RAG: the citations come before the answer, as links (http(s) only)", citations_as_links)
        checks.run("no errors in the browser console", console_clean)
        checks.run("screenshot kept as an artifact", screenshot)
        checks.run("the CSP refuses a remote load the page did not ask for", csp_blocks_remote_loads)
    finally:
        if browser:
            checks.run("no browser process left", browser.close)
        server.stop()
    checks.finish()


if __name__ == "__main__":
    sys.exit(main())
