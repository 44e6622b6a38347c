"""The web page at /ui/, in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python
client): token typed once and kept for the tab only, an ingestion started and followed to the end,
searches by text and by photo with their thumbnails loaded. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import requests
from conftest import ROOT
from photo_cases import NEWEST_FIRST, SHOOTS, sha256_of
from serve_app import SHOOTS_COLLECTION, auth

ARTIFACTS = ROOT / "test-artifacts"
COLLECTION = "ui-photos"
UPLOADED = "ui-uploads"
TOKEN_KEY = "photo-embeddings-token"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB_SECONDS = 300


def find_chromium() -> str | None:
    return next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None)


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (`chromium` on PATH; .ci/run installs Debian's): the web page is not driven")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def test_the_page_is_open_and_nothing_else_is(service):
    page = requests.get(f"{service['url']}/ui/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        asset = requests.get(f"{service['url']}/ui/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(kind), name
    assert requests.get(f"{service['url']}/ui", timeout=10, allow_redirects=True).url == f"{service['url']}/ui/"
    for route in ["/ui/other.js", "/collections", "/ingest"]:  # only the page's own files are open
        assert requests.get(f"{service['url']}{route}", timeout=10).status_code == 401, route


def test_an_installed_package_carries_the_page(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path), str(ROOT)], check=False, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    assert {f"serve_deployments/ui/{name}" for name in ("index.html", "app.js", "style.css")} <= set(names)


def test_ingest_follow_and_search_in_the_page(service, browser):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    token, photos = service["token"], service["allowed"] / "photos"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page_errors, sent = [], []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("request", lambda request: sent.append(request))
    page.goto(f"{service['url']}/ui/")

    page.fill("#token", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == token
    assert page.evaluate("localStorage.length") == 0
    assert token not in page.url

    ingest = page.locator("#ingest-form")
    ingest.locator("[name=collection]").fill(COLLECTION)
    ingest.locator("[name=paths]").fill("/etc")
    ingest.locator("button[type=submit]").click()
    expect(ingest.locator(".message")).to_have_text("403: path is outside the allowed roots: /etc")
    ingest.locator("[name=paths]").fill(str(photos))
    ingest.locator("[name=caption]").check()
    ingest.locator("button[type=submit]").click()
    expect(ingest.locator(".message")).to_contain_text("Started ingest-")
    job_id = ingest.locator(".message").inner_text().split()[-1]
    job = page.locator(f"#jobs tr[data-job-id='{job_id}']")
    expect(job.locator(".status")).to_have_text("SUCCEEDED", timeout=JOB_SECONDS * 1000)
    expect(job.locator(".embedded")).to_have_text("6")
    expect(job.locator(".captioned")).to_have_text("6")
    expect(page.locator(f"#collections tr[data-name='{COLLECTION}'] .count")).to_have_text("6")
    page.screenshot(path=ARTIFACTS / "ui-ingested.png", full_page=True)

    # An upload, then a search by the same photo, in one go: the page's upload waits until the photos are stored.
    upload = page.locator("#upload-form")
    upload.locator("[name=collection]").fill(UPLOADED)
    upload.locator("[name=files]").set_input_files([str(photos / "coffee.png"), str(photos / "flower.dng")])
    upload.locator("button[type=submit]").click()
    expect(upload.locator(".message")).to_contain_text(f"Stored 2 file(s) in {UPLOADED}: 2 new, 0 already stored, 0 failed (ingest-",
                                                       timeout=JOB_SECONDS * 1000)
    uploaded = page.locator(f"#jobs tr[data-job-id='{upload.locator('.message').inner_text().split()[-1].strip('()')}']")
    expect(uploaded.locator(".status")).to_have_text("SUCCEEDED")
    expect(page.locator(f"#collections tr[data-name='{UPLOADED}'] .count")).to_have_text("2")
    search = page.locator("#search-form")
    search.locator("[name=collection]").select_option(UPLOADED)
    page.set_input_files("#search-file", str(photos / "coffee.png"))
    page.click("#search-image")
    expect(page.locator("#search-message")).to_contain_text(f"2 results in {UPLOADED}")
    expect(page.locator("#results .result").first).to_have_attribute("data-id", sha256_of(photos / "coffee.png"))
    expect(page.locator("#results .result .score").first).to_have_text("score 1.000")
    wait_for_thumbnails(page, 2)
    page.screenshot(path=ARTIFACTS / "ui-upload-then-search.png", full_page=True)

    search.locator("[name=collection]").select_option(COLLECTION)
    search.locator("[name=text]").fill("a rocket")
    page.click("#search-text")
    cards = page.locator("#results .result")
    expect(cards).to_have_count(6)
    expect(cards.locator(".caption")).to_have_count(6)
    expect(cards.first.locator(".score")).to_contain_text("score ")
    wait_for_thumbnails(page, 6)
    page.screenshot(path=ARTIFACTS / "ui-search-text.png", full_page=True)

    page.set_input_files("#search-file", str(photos / "rocket.webp"))
    page.click("#search-image")
    expect(page.locator("#search-message")).to_contain_text(f"6 results in {COLLECTION}")
    expect(cards.first.locator(".filename")).to_have_text("rocket.webp")
    expect(cards.first.locator(".score")).to_have_text("score 1.000")
    wait_for_thumbnails(page, 6)
    page.screenshot(path=ARTIFACTS / "ui-search-image.png", full_page=True)
    page.evaluate("document.querySelector('#jobs-section').scrollIntoView()")
    page.screenshot(path=ARTIFACTS / "ui.png")  # 1280x800: jobs, search and results, as docs/ui.png shows

    thumbnails = [r for r in sent if "/thumbnails/" in r.url]
    assert len(thumbnails) >= 6
    assert all(r.all_headers().get("authorization") == f"Bearer {token}" for r in thumbnails)
    assert not [r.url for r in sent if token in r.url]
    assert page_errors == []

    # A wrong token: the page says so and asks again, keeping nothing.
    page.click("#forget")
    page.fill("#token", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("refused this token")
    expect(page.locator("#token-form")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    context.close()
    # The job the page started is this API's, with its counts.
    assert requests.get(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=10).json()["embedded"] == 6


def signed_in(browser, service, height: int = 800):
    """A new tab on the page, the token entered: (context, page, the page's script errors as they come)."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    page = context.new_page()
    page_errors = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{service['url']}/ui/")
    page.fill("#token", service["token"])
    page.click("#token-form button[type=submit]")
    return context, page, page_errors


def uploaded_in_page(page, collection: str, files: list[str], asked: str):
    """The files uploaded through the page's form, the check box `asked` ticked; the job's row, once it succeeded."""
    from playwright.sync_api import expect

    upload = page.locator("#upload-form")
    upload.locator("[name=collection]").fill(collection)
    upload.locator("[name=files]").set_input_files(files)
    upload.locator(f"[name={asked}]").check()
    upload.locator("button[type=submit]").click()
    expect(upload.locator(".message")).to_contain_text(f"Stored {len(files)} file(s) in {collection}: {len(files)} new",
                                                       timeout=JOB_SECONDS * 1000)
    job = page.locator(f"#jobs tr[data-job-id='{upload.locator('.message').inner_text().split()[-1].strip('()')}']")
    expect(job.locator(".status")).to_have_text("SUCCEEDED", timeout=JOB_SECONDS * 1000)
    return job


def test_a_watch_started_and_stopped_in_the_page(service, browser):
    """"Keep watching the folders" starts a watch; a photo copied in shows in its counts; Stop ends it."""
    from playwright.sync_api import expect

    folder = service["allowed"] / "ui-watched"
    folder.mkdir()
    photos = service["allowed"] / "photos"
    (folder / "coffee.png").write_bytes((photos / "coffee.png").read_bytes())
    context, page, page_errors = signed_in(browser, service)
    ingest = page.locator("#ingest-form")
    ingest.locator("[name=collection]").fill("ui-watched")
    ingest.locator("[name=paths]").fill(str(folder))
    ingest.locator("[name=watch]").check()
    ingest.locator("button[type=submit]").click()
    expect(ingest.locator(".message")).to_contain_text("Watching: ingest-")
    job_id = ingest.locator(".message").inner_text().split()[1]
    job = page.locator(f"#jobs tr[data-job-id='{job_id}']")
    expect(job.locator(".badge.watch")).to_have_text("watch")
    expect(job.locator(".embedded")).to_have_text("1", timeout=JOB_SECONDS * 1000)
    expect(job.locator(".status")).to_have_text("RUNNING")
    (folder / "rocket.webp").write_bytes((photos / "rocket.webp").read_bytes())
    expect(job.locator(".embedded")).to_have_text("2", timeout=60_000)
    page.screenshot(path=ARTIFACTS / "ui-watch.png", full_page=True)
    job.locator("button", has_text="Stop").click()
    expect(job.locator(".status")).to_have_text("STOPPED", timeout=60_000)
    assert page_errors == []
    context.close()


def wait_for_thumbnails(page, count: int) -> None:
    """Every result's thumbnail decoded in the page, from a blob: URL."""
    page.wait_for_function(
        """count => {
            const images = [...document.querySelectorAll('#results .result img')];
            return images.length === count && images.every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0);
        }""",
        arg=count, timeout=60_000)


def test_filters_pages_and_browsing_in_the_page(service, shoots, browser):
    """The filter controls narrow a text search and a listing (newest first, with thumbnails), and the
    pages follow one another."""
    from playwright.sync_api import expect

    by_id = {record["id"]: name for name, record in shoots["records"].items()}
    context, page, page_errors = signed_in(browser, service, height=1000)
    search = page.locator("#search-form")
    expect(search.locator(f"[name=collection] option[value='{SHOOTS_COLLECTION}']")).to_have_count(1)
    search.locator("[name=collection]").select_option(SHOOTS_COLLECTION)

    def shown() -> list[str]:
        return [by_id[i] for i in page.locator("#results .result").evaluate_all("cards => cards.map(c => c.dataset.id)")]

    search.locator("[name=text]").fill("a street")
    search.locator("[name=camera_make]").fill("Canon")
    page.click("#search-text")
    expect(page.locator("#search-message")).to_have_text(re.compile(f"^2 results in {SHOOTS_COLLECTION}"))
    assert set(shown()) == {"city/2021/street.jpg", "city/2022/market.jpg"}

    search.locator("[name=camera_make]").fill("")
    search.locator("[name=place]").fill("rio de janeiro")  # Copacabana, a district GeoNames places in Rio
    page.click("#search-text")
    expect(page.locator("#search-message")).to_have_text(re.compile(f"^1 result in {SHOOTS_COLLECTION}"))
    assert shown() == ["beach/2019/sunset.jpg"]
    expect(page.locator("#results .result .place")).to_have_text("Copacabana, Brazil")
    search.locator("[name=place]").fill("")
    search.locator("[name=date_from]").fill("2019-07-15")
    search.locator("[name=date_to]").fill("2021-12-31")
    search.locator("[name=folder]").fill(str(shoots["folder"] / "city"))
    page.click("#browse")
    expect(page.locator("#search-message")).to_have_text(f"2 results in {SHOOTS_COLLECTION} · 1–2 of 2")
    assert shown() == ["city/2021/night.heic", "city/2021/street.jpg"]  # newest first
    expect(page.locator("#results .result .score").first).to_have_text("2021-03-02T13:30:00")
    wait_for_thumbnails(page, 2)
    page.screenshot(path=ARTIFACTS / "ui-browse-filtered.png", full_page=True)

    search.locator("[name=has_caption]").select_option("false")  # every photo was captioned
    page.click("#browse")
    expect(page.locator("#search-message")).to_contain_text("none match the filters")

    for name in ("date_from", "date_to", "folder"):
        search.locator(f"[name={name}]").fill("")
    search.locator("[name=has_caption]").select_option("")
    search.locator("[name=k]").fill("3")
    page.click("#browse")
    expect(page.locator("#search-message")).to_contain_text(f"1–3 of {len(SHOOTS)}")
    first = shown()
    expect(page.locator("#previous-page")).to_be_disabled()
    page.click("#next-page")
    expect(page.locator("#search-message")).to_contain_text(f"4–6 of {len(SHOOTS)}")
    second = shown()
    page.click("#next-page")
    expect(page.locator("#search-message")).to_contain_text(f"7–7 of {len(SHOOTS)}")
    expect(page.locator("#next-page")).to_be_disabled()
    assert first + second + shown() == NEWEST_FIRST
    page.click("#previous-page")
    expect(page.locator("#search-message")).to_contain_text(f"4–6 of {len(SHOOTS)}")
    assert page_errors == []
    context.close()



def test_similar_photos_in_the_page(service, browser):
    """"Find similar photos" shows the exact copies, with their paths, and each group of near-duplicates
    with its thumbnails."""
    from playwright.sync_api import expect
    from serve_app import wait_job
    from test_similar import TINY_THRESHOLD, write_near_copies

    folder = service["allowed"] / "similar-in-the-page"
    write_near_copies(folder)
    started = requests.post(f"{service['url']}/ingest", json={"paths": [str(folder)], "collection": "ui-similar"},
                            headers=auth(service), timeout=60)
    assert wait_job(service, started.json()["job_id"])["status"] == "SUCCEEDED"
    context, page, page_errors = signed_in(browser, service, height=1400)
    form = page.locator("#similar-form")
    expect(form.locator("[name=collection] option[value='ui-similar']")).to_have_count(1)
    form.locator("[name=collection]").select_option("ui-similar")
    form.locator("[name=threshold]").fill(TINY_THRESHOLD)
    form.locator("button[type=submit]").click()
    expect(page.locator("#similar-message")).to_have_text(
        "1 photo(s) stored at several paths; 2 group(s) of near-duplicates at cosine ≥ 0.99 in ui-similar")
    exact = page.locator("#similar-groups .group.exact")
    expect(exact.locator(".copy")).to_have_text([str(folder / "exports" / "flower copy.jpg"), str(folder / "flower.jpg")])
    groups = page.locator("#similar-groups .group.near")
    expect(groups).to_have_count(2)
    expect(groups.nth(0).locator(".member")).to_have_count(6)
    expect(groups.nth(1).locator(".member")).to_have_count(6)
    page.wait_for_function("""() => {
        const images = [...document.querySelectorAll('#similar-groups img')];
        return images.length === 13 && images.every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0);
    }""", timeout=60_000)
    page.screenshot(path=ARTIFACTS / "ui-similar.png", full_page=True)
    assert page_errors == []
    context.close()


def test_the_words_in_photos_found_and_marked_in_the_page(service, browser, tmp_path):
    """Signs uploaded with "Read the text in the photos"; a search by words finds the one whose sign holds the
    word, says why, shows its place and its first line of text with the word marked."""
    from playwright.sync_api import expect

    from samples.text_photos import write_shop_signs

    signs = write_shop_signs(tmp_path / "signs")
    context, page, page_errors = signed_in(browser, service, height=1000)
    job = uploaded_in_page(page, "ui-signs", [str(path) for path in signs.values()], "read_text")
    expect(job.locator(".text_read")).to_have_text("3")

    search = page.locator("#search-form")
    search.locator("[name=collection]").select_option("ui-signs")
    search.locator("[name=text]").fill("the pharmacie")
    search.locator("[name=mode]").select_option("words")
    page.click("#search-text")
    expect(page.locator("#search-message")).to_have_text(re.compile("^1 result in ui-signs"))
    card = page.locator("#results .result")
    expect(card).to_have_attribute("data-id", sha256_of(signs["street.jpg"]))
    expect(card.locator(".place")).to_have_text("Paris, France")
    expect(card.locator(".text")).to_have_text("Rue de Rivoli 12")  # the first line
    expect(card.locator(".matched")).to_have_text("matched: text")
    search.locator("[name=text]").fill("Rivoli street")
    search.locator("[name=mode]").select_option("both")
    page.click("#search-text")
    expect(page.locator("#results .result").first.locator(".text mark")).to_have_text("Rivoli")
    page.screenshot(path=ARTIFACTS / "ui-words-search.png", full_page=True)
    assert page_errors == []
    context.close()


def test_people_found_named_merged_and_filtered_in_the_page(service, browser, tmp_path):
    """Photos of two people uploaded with "Find the faces"; the people section shows them with their faces, a
    person is named there, the search's person filter then offers the name and finds only their photos; a face
    moved to nobody leaves its person, and merging leaves one person."""
    from playwright.sync_api import expect

    from samples.face_photos import EILEEN, GRACE, write_faces

    written = write_faces(tmp_path / "faces")
    chosen = ["eileen.jpg", "eileen_mirrored.jpg", "grace.jpg", "grace_small.jpg", "together.jpg", "coffee.jpg"]
    context, page, page_errors = signed_in(browser, service, height=1400)
    job = uploaded_in_page(page, "ui-people", [str(tmp_path / "faces" / name) for name in chosen], "find_faces")
    expect(job.locator(".looked_for_faces")).to_have_text("6")
    job.locator(".log summary").click()  # the job's log, as it was kept
    expect(job.locator(".log pre")).to_contain_text("looked_for_faces 6")
    expect(job.locator(".log pre")).to_contain_text("SUCCEEDED")

    section = page.locator("#people-section")
    section.locator("[name=collection]").select_option("ui-people")
    section.locator("button[type=submit]").click()
    expect(page.locator("#people-message")).to_have_text("2 people in ui-people")
    cards = page.locator("#people .person")
    expect(cards).to_have_count(2)
    expect(cards.locator(".face img").first).to_have_attribute("src", re.compile("^blob:"))
    # Which card is whose: the one whose photos include grace_small.jpg is Grace's.
    grace_photos = {sha256_of(tmp_path / "faces" / name) for name in chosen if GRACE in written[name]}
    eileen_photos = {sha256_of(tmp_path / "faces" / name) for name in chosen if EILEEN in written[name]}
    for index in range(2):
        cards.nth(index).locator("button", has_text="Photos").click()
        expect(page.locator("#search-message")).to_contain_text("3 results in ui-people")
        shown = {page.locator("#results .result").nth(i).get_attribute("data-id") for i in range(3)}
        name = "Grace" if shown == grace_photos else "Eileen"
        assert shown == (grace_photos if name == "Grace" else eileen_photos)
        card = page.locator("#people .person").nth(index)
        card.locator(".name-form [name=name]").fill(name)
        card.locator(".name-form button").click()
        expect(page.locator("#people .person-name", has_text=name)).to_have_count(1)

    search = page.locator("#search-form")
    search.locator("[name=collection]").select_option("ui-people")
    expect(search.locator("[name=person] option")).to_have_count(3)  # anyone, and the two named
    search.locator("[name=person]").select_option(label="Grace (3)")
    page.click("#browse")
    expect(page.locator("#search-message")).to_contain_text("3 results in ui-people")
    assert {page.locator("#results .result").nth(i).get_attribute("data-id") for i in range(3)} == grace_photos
    expect(page.locator("#results .result .people").first).to_contain_text("Grace")

    def card_of(name: str):
        return page.locator("#people .person").filter(has=page.locator(".person-name", has_text=name))

    card_of("Grace").locator("button", has_text="Faces").click()
    expect(page.locator("#person-faces .face-card")).to_have_count(3)
    page.locator("#person-faces .face-card").first.locator(".move-form button").click()  # to nobody
    expect(card_of("Grace")).to_contain_text("2 faces")
    eileen_card = card_of("Eileen")
    eileen_card.locator(".merge-form select").select_option(label="Grace")
    eileen_card.locator(".merge-form button").click()
    expect(page.locator("#people .person")).to_have_count(1)
    expect(page.locator("#people .person")).to_contain_text("5 faces")
    page.screenshot(path=ARTIFACTS / "ui-people.png", full_page=True)
    assert page_errors == []
    context.close()


def test_a_search_key_sees_no_ingestion_or_changes_in_the_page(service, browser, tmp_path):
    """A key of the `search` scope: the page offers search and browsing, no ingestion, jobs or renaming people."""
    from playwright.sync_api import expect

    from samples.sample_photos import write_many

    (photo,) = write_many(str(tmp_path), 1, seed=56)
    with open(photo, "rb") as data:
        stored = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                               files={"files": ("a.jpg", data, "image/jpeg")}, data={"collection": "ui-searchkey"},
                               timeout=300)
    assert stored.status_code == 200, stored.text
    made = requests.post(f"{service['url']}/keys", headers=auth(service), timeout=60,
                         json={"name": "family phones", "scope": "search"})
    assert made.status_code == 201, made.text
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{service['url']}/ui/")
    page.fill("#token", made.json()["secret"])
    page.click("#token-form button[type=submit]")
    expect(page.locator("#key-name")).to_have_text("family phones (search)")
    expect(page.locator("#search-section")).to_be_visible()
    expect(page.locator("#ingest-section")).to_be_hidden()
    expect(page.locator("#jobs-section")).to_be_hidden()
    search = page.locator("#search-form")
    expect(search.locator("[name=collection] option[value='ui-searchkey']")).to_be_attached()
    search.locator("[name=collection]").select_option("ui-searchkey")
    page.click("#browse")
    expect(page.locator("#search-message")).to_contain_text("1 result in ui-searchkey")
    section = page.locator("#people-section")
    if section.locator("[name=collection] option[value='ui-people']").count():
        section.locator("[name=collection]").select_option("ui-people")
    section.locator("button[type=submit]").click()
    expect(page.locator("#people-message")).to_contain_text("in ")
    assert page.locator("#people .name-form, #people .merge-form").count() == 0
    expect(page.locator("#create-form")).to_be_hidden()
    assert page.locator("#collections .delete-form, #collections .reindex-form").count() == 0
    assert page_errors == [] and page.locator("#notice").is_hidden()
    context.close()


def test_a_collection_deleted_in_the_page_only_with_its_name_typed(service, browser, tmp_path):
    from playwright.sync_api import expect

    from samples.sample_photos import write_many

    (photo,) = write_many(str(tmp_path), 1, seed=55)
    with open(photo, "rb") as data:
        stored = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                               files={"files": ("a.jpg", data, "image/jpeg")}, data={"collection": "ui-doomed"}, timeout=300)
    assert stored.status_code == 200, stored.text
    context, page, page_errors = signed_in(browser, service)
    row = page.locator("#collections tr[data-name='ui-doomed']")
    expect(row).to_be_visible()
    row.locator("[name=confirm]").fill("ui-doome")
    row.locator(".delete-form button").click()
    expect(page.locator("#notice")).to_contain_text("confirm: type the collection's name, 'ui-doomed'")
    expect(row).to_be_visible()
    row.locator("[name=confirm]").fill("ui-doomed")
    row.locator(".delete-form button").click()
    expect(page.locator("#notice")).to_contain_text("Deleted: ui-doomed (1 records)")
    expect(page.locator("#collections tr[data-name='ui-doomed']")).to_have_count(0)
    assert page_errors == []
    context.close()


def test_collections_created_and_reindexed_and_a_result_opened_large_in_the_page(service, browser, tmp_path):
    """An admin creates a collection of the app's second model with faces on, and reindexes another into that model
    (a Ray job in the jobs table; the old records stay under a new name); a result opens large, and steps on."""
    from playwright.sync_api import expect

    from samples.sample_photos import write_many

    files = [("files", (f"holiday-{number}.jpg", open(path, "rb").read(), "image/jpeg"))
             for number, path in enumerate(write_many(str(tmp_path), 3, seed=57))]
    stored = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                           files=files, data={"collection": "ui-reindex"}, timeout=300)
    assert stored.status_code == 200, stored.text
    second = requests.get(f"{service['url']}/models", headers=auth(service), timeout=60).json()["models"][1]["name"]
    context, page, page_errors = signed_in(browser, service, height=1200)

    create = page.locator("#create-form")
    expect(create).to_be_visible()
    create.locator("[name=name]").fill("ui-made")
    create.locator("[name=model]").select_option(second)
    create.locator("[name=find_faces]").check()
    create.locator("button[type=submit]").click()
    expect(create.locator(".message")).to_have_text("Created ui-made (tiny-clip, making faces for every photo)",
                                                    timeout=JOB_SECONDS * 1000)  # the second model's Embedder starts
    expect(page.locator("#collections tr[data-name='ui-made'] .count")).to_have_text("0")

    row = page.locator("#collections tr[data-name='ui-reindex']")
    row.locator(".reindex-form [name=model]").select_option(second)
    row.locator(".reindex-form button").click()
    expect(page.locator("#notice")).to_contain_text(f"Reindexing ui-reindex into {second}: job ingest-")
    job_id = page.locator("#notice").inner_text().split("job ")[-1].strip()
    expect(page.locator(f"#jobs tr[data-job-id='{job_id}'] .status")).to_have_text("SUCCEEDED", timeout=JOB_SECONDS * 1000)
    expect(page.locator("#collections tr[data-name^='ui-reindex.before-'] .count")).to_have_text("3")
    row.locator("details.collection-details summary").click()  # what it holds now
    facts = row.locator("details.collection-details dl")
    expect(facts).to_contain_text(re.compile(r"records\s*3"))
    expect(facts).to_contain_text(re.compile(r"last ingestion\s*\d{4}-\d\d-\d\dT[\d:]+Z: 3 new"))
    expect(facts).to_contain_text(re.compile(r"on disk\s*[\d.]+ MB of vector index"))
    row.locator(".reindex-form [name=model]").select_option(second)  # into the model it has now: refused
    row.locator(".reindex-form button").click()
    expect(page.locator("#notice")).to_contain_text("model: collection 'ui-reindex' holds vectors of that very model")

    search = page.locator("#search-form")
    search.locator("[name=collection]").select_option("ui-reindex")
    search.locator("[name=text]").fill("a holiday")
    page.click("#search-text")
    # by the second model's Embedder, started again (it goes to zero after a few idle seconds in the tests)
    expect(page.locator("#search-message")).to_contain_text("3 results in ui-reindex", timeout=JOB_SECONDS * 1000)
    names = page.locator("#results .result .filename").all_inner_texts()
    assert sorted(names) == ["holiday-0.jpg", "holiday-1.jpg", "holiday-2.jpg"]
    page.locator("#results .result figure").first.click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".viewer-name")).to_have_text(names[0])
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 256", timeout=60_000)
    expect(page.locator("#viewer-previous")).to_be_disabled()
    page.click("#viewer-next")
    expect(viewer.locator(".viewer-name")).to_have_text(names[1])
    page.click("#viewer-next")
    expect(viewer.locator(".viewer-name")).to_have_text(names[2])
    expect(page.locator("#viewer-next")).to_be_disabled()
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 256", timeout=60_000)
    assert "nullnull" not in viewer.inner_text()
    page.screenshot(path=ARTIFACTS / "ui-result-large.png")
    page.click("#viewer-close")
    expect(viewer).to_be_hidden()
    assert page_errors == []
    context.close()
