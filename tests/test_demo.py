# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The demo page in a real headless browser (Debian's chromium and chromium-driver, driven by Selenium): it opens
the page, types, and reads what the pipeline answers."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import REPO, tiny_config
from transformers import AutoTokenizer

from modeling_bert_pals import BertPalsForMultitask
from trainer.tasks import get_task


pytest.importorskip("gradio", reason="the `demo` extra: pip install -e '.[demo]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="the `test` extra installs Selenium")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="no chromium / chromedriver: `apt-get install -y chromium chromium-driver` (.ci/run installs them)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_server(tiny_checkpoint, tmp_path):
    """`python demo.py MODEL_DIR` on a tiny model (sst, para cross-encoded, sts), and the pipeline it serves."""
    from transformers import pipeline

    from modeling_bert_pals import PIPELINE_TASK

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tasks = {name: get_task(name).head_spec() for name in ("sst", "para", "sts")}
    tasks["para"]["encoding"] = "cross"
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(vocab_size=tokenizer.vocab_size, tasks=tasks)).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, str(REPO / "demo.py"), str(tmp_path / "model"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"demo.py did not serve {url} (exit status {server.poll()})") from None
                time.sleep(0.5)
        yield url, pipeline(PIPELINE_TASK, model=model, tokenizer=tokenizer)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_demo_page_answers_a_sentence_and_a_pair_as_the_pipeline_does(demo_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    url, pipe = demo_server
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    sentence = "An utterly charming and hilarious film."
    box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#sentence textarea")))
    box.clear()
    box.send_keys(sentence)
    browser.find_element(By.ID, "classify").click()
    expected = pipe(sentence, task="sst", top_k=None)
    # gr.Label shows the top class as its heading, and one bar per class.
    wait.until(ready.text_to_be_present_in_element((By.ID, "out-sst"), expected[0]["label"]))
    shown = browser.find_element(By.ID, "out-sst").text
    for entry in expected:
        assert entry["label"] in shown
    assert f"{round(expected[0]['score'] * 100)}%" in shown
    browser.save_screenshot(str(tmp_path / "sentence.png"))

    tabs = browser.find_elements(By.XPATH, "//button[@role='tab'][contains(., 'Two sentences')]")
    next(tab for tab in tabs if tab.is_displayed()).click()
    first = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#first textarea")))
    first.clear()
    first.send_keys("Is it raining in Paris?")
    second = browser.find_element(By.CSS_SELECTOR, "#second textarea")
    second.clear()
    second.send_keys("Does it rain in Paris today?")
    browser.find_element(By.ID, "compare").click()
    pair = {"text": "Is it raining in Paris?", "text_pair": "Does it rain in Paris today?"}
    paraphrase, similarity = pipe(pair, task="para"), pipe(pair, task="sts")["score"]
    wait.until(ready.text_to_be_present_in_element((By.ID, "out-para"), paraphrase["label"]))
    number = browser.find_element(By.CSS_SELECTOR, "#out-sts input")
    wait.until(lambda _: number.get_attribute("value") not in ("", "0"))
    assert float(number.get_attribute("value")) == pytest.approx(similarity, abs=1e-3)
