"""The explorers on the built pages respond to their controls with no kernel and no network,
and the fusion explorer's list is the one `recutils.combine.ScoreFusion` gives.

The expected lists are computed here from recutils, the way chapter 5 builds its seed-0
members (`tuned_combination` over `book_members`; warm caches make this about a minute).
"""

from __future__ import annotations

import pytest
from test_rendered_book import HTML, browser  # noqa: F401  (the shared Chromium fixture)

CHAPTER_5 = HTML / "book" / "05_combining_results.html"
CHAPTER_3 = HTML / "book" / "03_similarity_and_cf.html"


def offline_page(browser, path):  # noqa: F811
    """A page opened from disk in a context with the network off; every non-file request is
    refused and recorded."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    refused: list[str] = []

    def refuse(route):
        refused.append(route.request.url)
        route.abort()

    context.route("http*://**", refuse)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    return context, page, refused, errors


@pytest.fixture(scope="module")
def chapter5_models():
    """Chapter 5's seed-0 members fitted on P1 train, built by the same recutils calls."""
    from recutils.ensemble import book_members, tuned_combination
    from recutils.data import load_movielens_100k
    from recutils.embeddings import item_text, user_profile_text
    from recutils.split import temporal_split, validation_split
    from recutils.text import TextEncoder
    from recutils.variants import QUICK_VARIANTS, careful_variant, choose_design, train_variants

    data = load_movielens_100k()
    encoder = TextEncoder()
    item_vectors = encoder.encode(item_text(data.items))
    p1 = temporal_split(data.interactions)
    p1_validation = validation_split(p1)
    towers = train_variants(item_vectors, p1.train, p1_validation, variants=QUICK_VARIANTS)
    design = choose_design(towers)
    members = book_members(
        item_vectors,
        lambda train: encoder.encode(user_profile_text(data.users, data.items, train)),
        careful_variant(design.best),
    )
    tuned = tuned_combination(members, p1, p1_validation, seeds=(0,))
    return tuned.on_split[0], p1


def set_control(page, selector: str, value) -> None:
    page.eval_on_selector(
        selector,
        "(e, v) => { e.value = String(v); e.dispatchEvent(new Event('input', {bubbles: true}));"
        " e.dispatchEvent(new Event('change', {bubbles: true})); }",
        value,
    )


def shown_list(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all(
        "#fusion .rx-result li", "items => items.map(i => i.dataset.item)")]


def test_fusion_explorer_matches_recutils_offline(browser, chapter5_models):  # noqa: F811
    from recutils.combine import ScoreFusion

    models, p1 = chapter5_models
    context, page, refused, errors = offline_page(browser, CHAPTER_5)
    try:
        explorers = page.locator('.rx-explorer[data-kind="fusion"]')
        assert explorers.count() == 1, "chapter 5 should show one fusion explorer"
        page.evaluate("() => { document.querySelector('.rx-explorer[data-kind=fusion]').id = 'fusion'; }")
        names = page.eval_on_selector_all("#fusion .rx-control[title]", "c => c.map(e => e.title)")
        assert names == [m.name for m in models], "the explorer's models are not chapter 5's seed-0 members"
        users = page.eval_on_selector_all("#fusion select[name=user] option", "o => o.map(e => e.textContent)")
        assert len(users) >= 10
        before = shown_list(page)
        assert len(before) == 10
        settings = [
            (0, [1.0, 1.0, 1.0, 1.0, 1.0]),
            (0, [0.0, 0.25, 0.25, 0.25, 0.25]),  # seed 0's tuned weights
            (3, [1.0, 0.0, 0.0, 0.0, 0.0]),
            (7, [0.2, 0.9, 0.0, 0.35, 0.6]),
            (len(users) - 1, [0.05, 0.0, 0.7, 1.0, 0.15]),
        ]
        for index, weights in settings:
            set_control(page, "#fusion select[name=user]", index)
            for m, w in enumerate(weights):
                set_control(page, f"#fusion .rx-control[title]:nth-of-type({m + 4}) input", w)
            user = int(users[index].removeprefix("user "))
            expected = ScoreFusion(models, weights).fit(p1.train).recommend([user], 10)[0].tolist()
            assert shown_list(page) == expected, f"user {user}, weights {weights}"
        assert shown_list(page) != before  # moving the controls changed the list
        set_control(page, "#fusion select[name=method]", "mixture")
        expected = ScoreFusion(models, weights, method="mixture").fit(p1.train).recommend([user], 10)[0]
        assert shown_list(page) == expected.tolist(), "softmax mixture at τ = 1"
        for m in range(len(models)):
            set_control(page, f"#fusion .rx-control[title]:nth-of-type({m + 4}) input", 0)
        assert "All weights are zero" in page.inner_text("#fusion .rx-result")
        assert refused == [] and errors == []
    finally:
        context.close()


def test_neighbour_explorer_follows_the_picker_offline(browser):  # noqa: F811
    context, page, refused, errors = offline_page(browser, CHAPTER_3)
    try:
        explorer = page.locator('.rx-explorer[data-kind="neighbours"]')
        assert explorer.count() == 1
        first = explorer.locator(".rx-panel").first.inner_text()
        explorer.locator("select[name=item]").select_option("0")  # Toy Story
        after = explorer.locator(".rx-panel").first.inner_text()
        assert after != first and explorer.locator(".rx-panel").first.locator("li").count() == 8
        assert refused == [] and errors == []
    finally:
        context.close()
