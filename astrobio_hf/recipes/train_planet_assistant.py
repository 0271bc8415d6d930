"""The pipeline's LLM-guided phase (issue 16): LoRA on the language model with the projector, on questions about a
planet answered from its cube.

    accelerate launch recipes/train_planet_assistant.py --projector runs/planet_projector [config.yaml] [--key value ...]
    astrobio-hf train planet-assistant --projector runs/planet_projector [...]          # the same code

LLaVA's second stage: the CNN-ViT encoder (frozen; by default the one the projector was trained on) reads each
window of the planet population; the projector (initialised from the integration phase) turns its [CLS] embedding
into soft tokens before a question, and the language model (the projector's base, with LoRA adapters) answers it
under its chat template. Projector and adapters train together on the answer tokens. The questions
(`astrobio_hf.data.planet_text`): the planet's regime, whether its window's global-mean surface temperature is
above freezing, and its stellar-flux range by the training planets' terciles; each answer is one word.

Writes the `PlanetAssistant` release to `output_dir` (config.json + the projector's model.safetensors, `adapter/`,
`encoder/`), predictions.jsonl, metrics.json and a card. The test, on the held-out planets, per question type
(accuracy, balanced accuracy, share of answers that parse): the assistant with each planet's cube tokens; the same
fine-tuned model given the mean training embedding's tokens (the same for every planet) and given no cube tokens;
the base language model given no cube tokens; the CNN-ViT's own heads (its regime head; its stellar-flux estimate
put into the same terciles); and the training majority class; all computed in the same run.
Same order as every recipe (DESIGN.md section 4).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.chat import ChatEncoder
from astrobio_hf.data.planet_text import answer_choices, encode_windows, flux_range, flux_terciles, question_types, questions
from astrobio_hf.evaluation.planet_assistant import collate_rows, majority_answer, parse_choice, rows_loss, score_choices, to_device
from astrobio_hf.models.language_model import DEFAULT_TARGET_MODULES, add_lora, load_base_model, load_tokenizer, resolve_base_model, \
    save_adapter_release, trainable_state_only
from astrobio_hf.models.planet_projector import PlanetProjector, SoftTokenLanguageModel, generate_with_soft_tokens
from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, parse_recipe_args, start_run
from astrobio_hf.training.args import resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_planet_assistant")

RECIPE_DEFAULTS = {
    "output_dir": "runs/planet_assistant", "learning_rate": 5e-4, "weight_decay": 0.0, "max_steps": 200,
    "per_device_batch_size": 8, "ema_decay": 0.0, "eval_every": 50, "checkpoint_every": 50, "log_every": 10,
}
BASE_LM_NEW_TOKENS = 32  # the base model, never taught one-word answers, writes a sentence; its answer is the label it names
SYSTEMS = {  # name -> what the card calls it
    "assistant": "assistant, the planet's cube tokens",
    "assistant_mean_embedding": "assistant, the mean training embedding's tokens (no planet information)",
    "assistant_no_cube_tokens": "assistant, no cube tokens",
    "base_lm_no_cube_tokens": f"base language model, no cube tokens (up to {BASE_LM_NEW_TOKENS} tokens)",
    "cnn_vit": "CNN-ViT heads (regime head; stellar-flux estimate in the terciles)",
    "majority": "training majority class",
}


@dataclass
class DataArguments:
    data_dir: str = field(default="data/planets", metadata={"help": "The encoder's datacube dataset (shards + schema.json)."})
    projector: str = field(default="", metadata={"help": "The integration phase's projector: a run or release folder (required)."})
    encoder: str = field(default="", metadata={"help": "The frozen CNN-ViT folder ('' = the one named in the projector's config)."})
    question_types: str = field(default="", metadata={"help": "Comma list among regime, above_freezing, stellar_flux_range ('' = all the dataset can answer)."})
    max_length: int = field(default=256, metadata={"help": "Longest example in tokens."})


@dataclass
class ModelArguments:
    base_model: str = field(default="", metadata={"help": "The language model ('' = the projector's base_model)."})
    gguf_file: str = field(default="", metadata={"help": "GGUF file name inside --base_model's folder, when it holds several."})
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: str = field(default=",".join(DEFAULT_TARGET_MODULES), metadata={"help": "Comma list of linear layer names that get adapters."})
    system_prompt: str = field(default="Answer questions about planets in one word.", metadata={"help": "System message of every question."})
    max_new_tokens: int = field(default=8, metadata={"help": "Generated tokens per test answer (greedy)."})
    generation_batch_size: int = 32


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


def question_rows(windows: list[dict], terciles, types: list[str], regime_names: list[str], chat: ChatEncoder) -> list[dict]:
    """One row per window and question type: the encoder's embedding, the question, its answer, chat-encoded. A window
    of a planet without a regime label (-1 in the schema) has no regime question (counted in the log)."""
    rows, unlabelled = [], 0
    for i, w in enumerate(windows):
        facts = w["facts"]
        for q in questions(facts, terciles, types, regime_names):
            if q["answer"] is None:
                unlabelled += 1
                continue
            rows.append({"embedding": w["embedding"], "window": i, **q,
                         **chat.encode(q["question"], q["answer"], f"{facts.planet_id}/{facts.start}/{q['type']}")})
    if unlabelled:
        logger.warning("%d of %d windows have no regime label: no regime question for them", unlabelled, len(windows))
    return rows


def answer_test(model: SoftTokenLanguageModel, chat: ChatEncoder, rows: list[dict], windows: list[dict], train_rows: list[dict],
                mean_embedding: torch.Tensor, terciles, regime_names: list[str], *, batch_size: int, max_new_tokens: int, device) -> dict:
    """Each system's answer (parsed label or None) to each test row, and the generated texts."""
    lm, projector = model.language_model, model.projector
    prompts = [r["question"] for r in rows]
    embeddings = torch.stack([r["embedding"] for r in rows]).to(device)
    kwargs = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "device": device}
    with torch.no_grad():
        texts = {
            "assistant": generate_with_soft_tokens(lm, chat, projector(embeddings), prompts, **kwargs),
            "assistant_mean_embedding": generate_with_soft_tokens(lm, chat, projector(mean_embedding.to(device)).expand(len(rows), -1, -1),
                                                                  prompts, **kwargs),
            "assistant_no_cube_tokens": generate_with_soft_tokens(lm, chat, None, prompts, **kwargs),
        }
        with lm.disable_adapter():  # the base answers in sentences: room for one (BASE_LM_NEW_TOKENS)
            texts["base_lm_no_cube_tokens"] = generate_with_soft_tokens(lm, chat, None, prompts,
                                                                        **{**kwargs, "max_new_tokens": max(BASE_LM_NEW_TOKENS, max_new_tokens)})
    answers = {name: [parse_choice(t, answer_choices(r["type"], regime_names)) for t, r in zip(ts, rows)] for name, ts in texts.items()}
    cnn = []
    for r in rows:
        w = windows[r["window"]]
        flux = w["predicted_params"].get("stellar_flux")
        cnn.append(w["predicted_regime"] if r["type"] == "regime" else
                   flux_range(flux, terciles) if r["type"] == "stellar_flux_range" and flux is not None else None)
    answers["cnn_vit"] = cnn
    majority = {kind: majority_answer([t["answer"] for t in train_rows if t["type"] == kind]) for kind in {r["type"] for r in rows}}
    answers["majority"] = [majority[r["type"]] for r in rows]
    return {"answers": answers, "texts": texts}


def score_systems(rows: list[dict], answers: dict, types: list[str]) -> dict:
    """Per system and question type: accuracy, balanced accuracy, parsed share, n (types a system cannot answer: none)."""
    scores = {}
    for name, preds in answers.items():
        scores[name] = {}
        for kind in types:
            idx = [i for i, r in enumerate(rows) if r["type"] == kind]
            if name == "cnn_vit" and all(preds[i] is None for i in idx):
                continue  # the CNN-ViT has no head for this question (above freezing)
            scores[name][kind] = score_choices([rows[i]["answer"] for i in idx], [preds[i] for i in idx])
    return scores


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    if not data_args.projector:
        raise ValueError("--projector: expected the integration phase's projector folder (e.g. runs/planet_projector), got none")
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.models.cnn_vit import CnnVitForParameterRegression
    from astrobio_hf.models.planet_assistant import PlanetAssistant, PlanetAssistantConfig

    projector = PlanetProjector.from_pretrained(data_args.projector)
    encoder_dir = data_args.encoder or projector.config.encoder
    base_model = model_args.base_model or projector.config.base_model
    if not encoder_dir or not base_model:
        raise ValueError(f"expected --encoder and --base_model, or a projector config naming them; got encoder {encoder_dir!r}, base model {base_model!r}")
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run; checkpoints hold the projector and the adapters only.
    accelerator = start_run(train_args)
    trainable_state_only(accelerator)
    started = time.perf_counter()

    # 2. The frozen encoder's view of every window, the questions, the base model with LoRA.
    encoder = CnnVitForParameterRegression.from_pretrained(encoder_dir).to(accelerator.device).eval()
    if encoder.config.hidden_size != projector.config.encoder_hidden_size:
        raise ValueError(f"--encoder {encoder_dir}: expected hidden size {projector.config.encoder_hidden_size} (the projector's), got {encoder.config.hidden_size}")
    schema = DatasetSchema.from_dir(data_args.data_dir)
    available = question_types(schema)
    types = [t.strip() for t in data_args.question_types.split(",") if t.strip()] or available
    if [t for t in types if t not in available] or not types:
        raise ValueError(f"--question_types: expected types this dataset can answer ({available}), got {types}")
    regime_names = list(schema.planet_regime_names or [])
    windows = {s: encode_windows(encoder, data_args.data_dir, s, schema, accelerator.device) for s in ("train", "validation", "test")}
    terciles = flux_terciles([w["facts"] for w in windows["train"]]) if "stellar_flux_range" in types else None
    encoder.cpu()  # not needed again until it is saved with the release
    with accelerator.main_process_first():
        base_path = resolve_base_model(base_model, model_args.gguf_file)
    tokenizer = load_tokenizer(base_path)
    chat = ChatEncoder(tokenizer, data_args.max_length, model_args.system_prompt)
    rows = {s: question_rows(w, terciles, types, regime_names, chat) for s, w in windows.items()}
    logger.info("questions (%s): %s", ", ".join(types), {s: len(r) for s, r in rows.items()})
    language_model = load_base_model(base_path, device=accelerator.device)
    if language_model.get_input_embeddings().weight.shape[1] != projector.config.lm_hidden_size:
        raise ValueError(f"--base_model {base_model}: expected hidden size {projector.config.lm_hidden_size} (the projector's), "
                         f"got {language_model.get_input_embeddings().weight.shape[1]}")
    language_model = add_lora(language_model, rank=model_args.lora_rank, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout,
                              target_modules=[t.strip() for t in model_args.target_modules.split(",") if t.strip()])
    model = SoftTokenLanguageModel(projector, language_model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("trainable: projector %d + LoRA %d parameters", sum(p.numel() for p in projector.parameters()),
                trainable - sum(p.numel() for p in projector.parameters()))

    # 3. The optimizer over projector and adapters; the loader.
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    pad_id = tokenizer.pad_token_id
    train_loader = DataLoader(rows["train"], batch_size=train_args.per_device_batch_size, shuffle=True,
                              collate_fn=lambda batch: collate_rows(batch, pad_id), generator=torch.Generator().manual_seed(train_args.seed))

    def compute_loss(model, batch, state):
        loss, tokens = model(**to_device(batch, accelerator.device))
        return loss, {"answer_tokens": float(tokens)}

    def validate(model, state):
        return {"loss": rows_loss(model, rows["validation"], pad_id, accelerator.device)}

    # 4. The loop.
    result = fit(accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
                 micro_batches_per_epoch=-(-len(train_loader) // accelerator.num_processes), run_config=run_config,
                 project="planet_assistant", hooks=hooks, find_unused_parameters=False)

    # 5. Test on the held-out planets beside the baselines; the release.
    final = result.model
    mean_embedding = torch.stack([w["embedding"] for w in windows["train"]]).mean(dim=0, keepdim=True)
    test = {"assistant/answer_loss": rows_loss(final, rows["test"], pad_id, accelerator.device),
            "assistant_mean_embedding/answer_loss": rows_loss(final, rows["test"], pad_id, accelerator.device, mean_embedding),
            "test_windows": len(windows["test"]), "test_questions": len(rows["test"])}
    if accelerator.is_main_process:
        answered = answer_test(final, chat, rows["test"], windows["test"], rows["train"], mean_embedding, terciles, regime_names,
                               batch_size=model_args.generation_batch_size, max_new_tokens=model_args.max_new_tokens, device=accelerator.device)
        scores = score_systems(rows["test"], answered["answers"], types)
        test["scores"] = scores
        for kind in types:
            logger.info("test %s accuracy: %s", kind, {name: round(s[kind]["accuracy"], 3) for name, s in scores.items() if kind in s})
        config = PlanetAssistantConfig(
            projector={k: getattr(final.projector.config, k) for k in ("encoder_hidden_size", "lm_hidden_size", "num_soft_tokens",
                                                                        "projector_hidden_size", "embedding_scale", "encoder", "base_model")},
            base_model=base_model, gguf_file=model_args.gguf_file, question_types=types, regime_names=regime_names,
            flux_terciles=list(terciles) if terciles else None, system_prompt=model_args.system_prompt, max_new_tokens=model_args.max_new_tokens,
        )
        assistant = PlanetAssistant(config)
        assistant.projector.load_state_dict(final.projector.state_dict())
        assistant.save_pretrained(output_dir, safe_serialization=True)
        save_adapter_release(final.language_model, tokenizer, output_dir / "adapter", base_model=base_model, gguf_file=model_args.gguf_file)
        encoder.save_pretrained(output_dir / "encoder", safe_serialization=True)
        with open(output_dir / "predictions.jsonl", "w") as f:
            for i, r in enumerate(rows["test"]):
                facts = windows["test"][r["window"]]["facts"]
                f.write(json.dumps({"planet_id": facts.planet_id, "segment": facts.segment, "start": facts.start, "type": r["type"],
                                    "question": r["question"], "answer": r["answer"],
                                    **{name: a[i] for name, a in answered["answers"].items()},
                                    **{f"{name}_text": t[i] for name, t in answered["texts"].items()}}) + "\n")
        metrics = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric, "test": test,
                   "question_types": types, "flux_terciles": terciles, "train_questions": len(rows["train"]),
                   "trainable_parameters": trainable, "train_seconds": round(time.perf_counter() - started, 1),
                   "throughput": result.throughput, "config": run_config}
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        write_card(output_dir, metrics, data_args=data_args, encoder_dir=encoder_dir, base_model=base_model, types=types,
                   windows=windows, terciles=terciles)
    finish_run(result, {k: v for k, v in test.items() if k != "scores"})
    return test


def write_card(output_dir: Path, metrics: dict, *, data_args, encoder_dir: str, base_model: str, types: list[str], windows: dict, terciles) -> None:
    from astrobio_hf.hub.model_card import build_model_card, markdown_table
    from astrobio_hf.models.language_model import base_model_card_id

    test, scores = metrics["test"], metrics["test"]["scores"]
    header = ["system"] + [f"{kind} accuracy (balanced)" for kind in types] + ["parsed"]
    table = []
    for name, label in SYSTEMS.items():
        s = scores.get(name, {})
        cells = [f"{s[k]['accuracy']:.3f} ({s[k]['balanced_accuracy']:.3f})" if k in s else "n/a" for k in types]
        parsed = [s[k]["parsed"] for k in types if k in s]
        table.append([label, *cells, f"{sum(parsed) / len(parsed):.2f}" if parsed else "n/a"])
    n = {k: next(iter(scores.values()))[k]["n"] for k in types}
    card = build_model_card(
        model_name="planet-assistant",
        summary=(f"A language model (`{base_model}`) with LoRA adapters that answers questions about a planet from its cube: "
                 f"the frozen CNN-ViT `{encoder_dir}` reads the cube, a projector (from `{data_args.projector}`) turns its "
                 "embedding into soft tokens before the question (LLaVA's second stage: projector and adapters trained "
                 f"together, {metrics['global_step']} steps on {metrics['train_questions']} questions about "
                 f"{len(windows['train'])} training windows of `{data_args.data_dir}`)."),
        sections={
            "Evaluation": (
                f"{test['test_questions']} questions on {test['test_windows']} windows of the test planets "
                f"(per type: {n}). Accuracy, with balanced accuracy (the mean per-class recall; always giving one "
                "answer scores 1/K) in brackets; an answer that names none or several of the allowed answers is wrong "
                "(`parsed`: the share that named exactly one).\n\n" + markdown_table(header, table) +
                f"\n\nAnswer loss on the held-out questions: {test['assistant/answer_loss']:.4f} with each planet's cube tokens, "
                f"{test['assistant_mean_embedding/answer_loss']:.4f} with the mean training embedding's."),
            "Method": (
                "Questions (one-word answers, the base model's chat template, loss on the answer tokens): "
                "regime: the planet's labelled climate regime; above_freezing: whether the window's own global-mean "
                "surface temperature (lowest level, cos-latitude weighted) is at least 273.15 K; stellar_flux_range: "
                + (f"low / medium / high by the training planets' terciles {terciles[0]:.4g} and {terciles[1]:.4g} W m-2."
                   if terciles else "not asked.")),
            "Limitations": (
                "It answers the three question types it was trained on, about planets like the training population's "
                "(the encoder's variables, grid and levels in `encoder/config.json`); the held-out set is small (see n "
                "above), so an accuracy differs from another system's only by more than its sampling noise. The "
                "language model is the base named above with these adapters; its answers are one word, read by exact "
                "match against the allowed answers."),
            "How to load": ("```python\nfrom astrobio_hf import PlanetAssistant\nassistant = PlanetAssistant.from_pretrained(\"PATH\")\n"
                    "answers = assistant.ask(cube)  # (B, V, Tc, Tg, Z, Y, X) physical, as the CNN-ViT reads it\n```\n\n"
                    "The folder holds the projector (model.safetensors), the LoRA adapter (`adapter/`, PEFT) and the "
                    "encoder (`encoder/`); the base model is resolved as the language-model family resolves `--base_model`."),
        },
        eval_results=[("accuracy", f"{kind} accuracy", scores["assistant"][kind]["accuracy"]) for kind in types],
        task_type="question-answering", tags=["planet-assistant", "lora", "soft-prompt"], base_model=base_model_card_id(base_model),
    )
    card.save(str(output_dir / "README.md"))


if __name__ == "__main__":
    main()
