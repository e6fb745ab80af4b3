"""Diagrams drawn by code at build time (no committed images): boxes joined by arrows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: Fill colours by kind of box: what is given, what is frozen, what is trained, what is computed.
COLOURS = {"input": "#f2f2f2", "frozen": "#dbe8f5", "trained": "#fde3c8", "output": "#e2f0d9"}


@dataclass(frozen=True)
class Box:
    """A labelled box centred at (x, y), in axes units of the diagram (0..width, 0..height)."""

    label: str
    x: float
    y: float
    kind: str = "input"
    width: float = 2.2
    height: float = 0.8


def draw_flow(
    boxes: Mapping[str, Box],
    arrows: Sequence[tuple[str, str]],
    size: tuple[float, float] = (10.0, 4.0),
    title: str | None = None,
    legend: bool = True,
) -> Figure:
    """Draw ``boxes`` and an arrow for each (from, to) pair of box names.

    Args:
        legend: explain the box colours (given, frozen, trained, computed).

    Raises:
        ValueError: an arrow names an unknown box, or a box has an unknown kind.
    """
    unknown = sorted({name for pair in arrows for name in pair} - set(boxes))
    if unknown:
        raise ValueError(f"arrows name boxes that do not exist: {unknown}")
    kinds = {box.kind for box in boxes.values()} - set(COLOURS)
    if kinds:
        raise ValueError(f"unknown box kinds {sorted(kinds)}; use one of {list(COLOURS)}")
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    width, height = size
    ax.set(xlim=(0, width), ylim=(0, height), aspect="equal")
    ax.axis("off")
    for box in boxes.values():
        ax.add_patch(
            FancyBboxPatch(
                (box.x - box.width / 2, box.y - box.height / 2),
                box.width,
                box.height,
                boxstyle="round,pad=0.05",
                facecolor=COLOURS[box.kind],
                edgecolor="#555555",
            )
        )
        ax.text(box.x, box.y, box.label, ha="center", va="center", fontsize=9, wrap=True)
    for start, end in arrows:
        a, b = boxes[start], boxes[end]
        ax.add_patch(
            FancyArrowPatch(
                _edge_point(a, b), _edge_point(b, a), arrowstyle="-|>", mutation_scale=12, color="#555555"
            )
        )
    if legend:
        handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#555555") for c in COLOURS.values()]
        ax.legend(handles, list(COLOURS), loc="lower right", fontsize=8, frameon=False, ncols=4)
    if title:
        ax.set_title(title)
    return fig


def _edge_point(box: Box, towards: Box) -> tuple[float, float]:
    """Where a line from ``box``'s centre to ``towards``'s centre leaves ``box``."""
    dx, dy = towards.x - box.x, towards.y - box.y
    scale = min(
        (box.width / 2 + 0.05) / abs(dx) if dx else float("inf"),
        (box.height / 2 + 0.05) / abs(dy) if dy else float("inf"),
    )
    return box.x + dx * scale, box.y + dy * scale


def two_tower_diagram(user_input: str = "text", temperature: float = 0.05) -> Figure:
    """The two-tower model of chapter 4: frozen BERT vectors, two MLPs, cos / τ, softmax over the batch.

    Args:
        user_input: "text" (u_emb = mean of the history's BERT vectors, the article's reading) or
            "history" (the mean of the item tower's outputs over the history).
    """
    if user_input not in ("text", "history"):
        raise ValueError(f"user_input must be 'text' or 'history', got {user_input!r}")
    user_side = (
        Box("MiniLM (frozen)\nu_emb = mean of i_emb", 4.0, 3.2, "frozen", width=2.5)
        if user_input == "text"
        else Box("item MLP on each film,\nthen the mean", 4.0, 3.2, "trained", width=2.5)
    )
    boxes = {
        "history": Box("user's train films\n(history)", 1.3, 3.2),
        "item": Box("film text\n(title, year, genres)", 1.3, 0.9),
        "bert_u": user_side,
        "bert_i": Box("MiniLM (frozen)\ni_emb, 384-d", 4.0, 0.9, "frozen"),
        "user_mlp": Box("user MLP\nu_h, unit length", 6.7, 3.2, "trained"),
        "item_mlp": Box("item MLP\ni_h, unit length", 6.7, 0.9, "trained"),
        "score": Box(f"cos(u_h, i_h) / τ\n(τ = {temperature:g}) − log q_i", 9.4, 2.05, "output", width=2.6),
        "loss": Box("softmax over the batch's\nfilms; target = own film", 12.6, 2.05, "output", width=2.8),
    }
    arrows = [
        ("history", "bert_u"),
        ("item", "bert_i"),
        ("bert_u", "user_mlp"),
        ("bert_i", "item_mlp"),
        ("user_mlp", "score"),
        ("item_mlp", "score"),
        ("score", "loss"),
    ]
    return draw_flow(boxes, arrows, size=(14.2, 4.1))


#: The article's section 2.2 flowchart (a Mermaid ``graph TB``): node → (English label, the article's term).
ARTICLE_CONCEPTS = {
    "A": ("large model", "大模型"),
    "B": ("collaborative\nfiltering", "协同过滤"),
    "C": ("deep\nrecommendation", "深度推荐"),
    "D": ("result generation\n& combination", "结果生成组合"),
    "E": ("rank\ncombination", "排序组合"),
    "F": ("user-based CF", "基于用户的协同过滤"),
    "G": ("item-based CF", "基于物品的协同过滤"),
    "H": ("similarity\ncomputation", "相似度计算"),
    "I": ("similar users", "相似用户"),
    "J": ("item vectors", "物品向量"),
    "K": ("similar items", "相似物品"),
    "L": ("item\nrepresentation", "物品表示"),
    "M": ("similar-item\nrepresentation", "相似物品表示"),
    "N": ("final\nrecommendations", "最终推荐结果"),
}
ARTICLE_EDGES = [
    ("A", "B"), ("A", "C"), ("C", "D"), ("D", "E"), ("B", "F"), ("B", "G"), ("F", "H"),
    ("F", "I"), ("G", "J"), ("G", "K"), ("J", "L"), ("K", "M"), ("E", "N"),
]  # fmt: skip

#: The six steps of the article's application sections (6.1–6.3), and what the book's pipeline does at each.
ARTICLE_STEPS = [
    ("1. behaviour data", "interactions, split\nP1 / P2 / P3 + validation"),
    ("2. item attributes", "one text per item\n(and per user)"),
    ("3. BERT embeddings", "frozen MiniLM:\ni_emb, u_emb"),
    ("4. similarity", "content cosine,\nItemKNN, EASE"),
    ("5. two-tower", "MLP towers,\nseeded, early-stopped"),
    ("6. combination", "CombSUM, weights\ntuned on validation"),
]


def article_flow_diagram(section: str = "2.2") -> Figure:
    """The article's flow, redrawn by code.

    Args:
        section: "2.2", the article's concept flowchart, node for node and arrow for arrow
            (English labels; the article's terms are in ``ARTICLE_CONCEPTS``); or "6.2", its
            six application steps in order, each with what ``recutils.pipeline`` does there.
    """
    if section == "2.2":
        rows = [["A"], ["B", "C"], ["F", "G", "D"], ["H", "I", "J", "K", "E"], ["L", "M", "N"]]
        columns = {"A": 6.6, "B": 3.6, "C": 10.8, "F": 2.4, "G": 6.0, "D": 10.8, "H": 1.2, "I": 3.6,
                   "J": 6.0, "K": 8.4, "E": 10.8, "L": 6.0, "M": 8.4, "N": 10.8}  # fmt: skip
        boxes = {
            node: Box(ARTICLE_CONCEPTS[node][0], columns[node], 8.2 - 1.7 * level, "input", height=0.95)
            for level, row in enumerate(rows)
            for node in row
        }
        boxes["A"] = replace(boxes["A"], kind="frozen")  # the pretrained model
        for node in ("D", "E", "N"):  # what reaches the user
            boxes[node] = replace(boxes[node], kind="output")
        return draw_flow(boxes, ARTICLE_EDGES, size=(12.2, 9.0), legend=False)
    if section == "6.2":
        boxes = {}
        for index, (step, detail) in enumerate(ARTICLE_STEPS):
            x = 1.3 + 2.6 * index
            boxes[f"s{index}"] = Box(step, x, 2.3, "input", width=2.3, height=0.7)
            boxes[f"d{index}"] = Box(detail, x, 0.9, "output", width=2.3, height=1.0)
        arrows = [(f"s{i}", f"s{i + 1}") for i in range(len(ARTICLE_STEPS) - 1)]
        arrows += [(f"s{i}", f"d{i}") for i in range(len(ARTICLE_STEPS))]
        return draw_flow(boxes, arrows, size=(15.8, 3.0), legend=False)
    raise ValueError(
        f"section must be '2.2' (the concept flowchart) or '6.2' (the six steps), got {section!r}"
    )
