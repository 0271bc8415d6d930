"""Model cards with huggingface_hub's `ModelCard`/`ModelCardData` (YAML metadata + model-index results)."""

from __future__ import annotations

from typing import Iterable, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; floats get 4 significant digits."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_model_card(
    *,
    model_name: str,
    summary: str,
    sections: dict[str, str],
    eval_results: Sequence[tuple[str, str, float]] = (),
    dataset_name: str = "synthetic planet ensemble",
    dataset_type: str = "astrobio-hf/synthetic-planets",
    task_type: str = "climate-forecasting",
    tags: Sequence[str] = (),
    license: str = "apache-2.0",
    library_name: str = "transformers",
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
) -> ModelCard:
    """Assemble a card: metadata (library, tags, model-index with `eval_results` as
    (metric_type, metric_name, value) triples on the test split) and Markdown `sections` in order."""
    data = ModelCardData(
        library_name=library_name,
        license=license,
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        tags=["astrobio-hf", *tags],
        model_name=model_name,
        eval_results=[
            EvalResult(
                task_type=task_type,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split="test",
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=float(value),
            )
            for metric_type, metric_name, value in eval_results
        ]
        or None,
    )
    body = [f"# {model_name}", "", summary, ""]
    for title, text in sections.items():
        body += [f"## {title}", "", text.strip(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
