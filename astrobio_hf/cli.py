"""`astrobio-hf`: one entry point for data preparation and training.

    astrobio-hf data synth --output DIR [--n-planets N] [--seed S] [...]
    astrobio-hf data ingest INPUT.nc [more.nc ...] --output DIR [--variables a,b,c] [--units T=degC] [--rename UWND=u]
    astrobio-hf data inspect DIR
    astrobio-hf data metabolic [--output DIR] [--seed N]        # real metabolic-network graphs (cobra's offline models)
    astrobio-hf data spectra [--output DIR] [--n-samples N] [--seed S]   # WASP-43b (cube, spectrum) pairs (nemesispy)
    astrobio-hf data instructions [--catalogue CSV] [--output DIR] [--seed S]   # planet-science instructions (exoplanet.eu)
    astrobio-hf data table FILE.csv --output DIR [--graph EDGES.csv] [--regime-column C --targets REGIMES.csv] [--units a=u] [--log1p COLS|all]   # numeric table for causal discovery
    astrobio-hf data sachs [--subset observational|full] [--output DIR]   # Sachs et al. 2005 flow cytometry (cdt's copy)
    astrobio-hf data planet-world [--output DIR] [--n-planets N] [--seed S]   # synthetic planets with causal and counterfactual truth
    astrobio-hf train datacube|diffusion|pathway-vae|cnn-vit|climate-spectra|language-model|causal-world-model|planet-projector|planet-assistant [config.yaml] [--key value ...]   # same code as recipes/train_<family>.py
    astrobio-hf pipeline PIPELINE.yaml [--only PHASE] [--from PHASE]   # phases of recipes in order; skips finished ones, resumes, reruns what changed
    astrobio-hf privacy datacube|cnn-vit|language-model [--epsilons 1,3,8] [--output-root DIR] [config.yaml] [--key value ...]   # utility vs epsilon + membership attack
    astrobio-hf tune <family> [config.yaml] --space space.yaml --n-trials N [--storage sqlite:///...] [--pruner median|hyperband|none] [...]   # Optuna study over the recipe's fields
    astrobio-hf release RUN_DIR --name NAME --version 1.0.0 [--push REPO_ID] [--output-root model_cards]
    astrobio-hf convert legacy-pathway-vae PATH --output DIR [--graphs NPZ]
    astrobio-hf eval diffusion RUN_DIR [--samplers ddim,dpmsolver++,unipc] [--steps 10,20,50] [--guidance 1,2]

Thin by design: it parses, then calls the same functions the recipes and tests call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

FAMILIES = {
    "datacube": "astrobio_hf.recipes.train_datacube",
    "diffusion": "astrobio_hf.recipes.train_diffusion",
    "pathway-vae": "astrobio_hf.recipes.train_pathway_vae",
    "cnn-vit": "astrobio_hf.recipes.train_cnn_vit",
    "climate-spectra": "astrobio_hf.recipes.train_climate_spectra",
    "language-model": "astrobio_hf.recipes.train_language_model",
    "causal-world-model": "astrobio_hf.recipes.train_causal_world_model",
    "planet-projector": "astrobio_hf.recipes.train_planet_projector",
    "planet-assistant": "astrobio_hf.recipes.train_planet_assistant",
}


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="build, convert or inspect datacube shards")
    dsub = data.add_subparsers(dest="data_command", required=True)

    synth = dsub.add_parser("synth", help="synthesise a physically consistent planet ensemble")
    synth.add_argument("--output", required=True, help="output directory (shards + schema.json)")
    synth.add_argument("--n-planets", type=int, default=24)
    synth.add_argument("--n-climate-steps", type=int, default=24)
    synth.add_argument("--n-geological-steps", type=int, default=2)
    synth.add_argument("--n-levels", type=int, default=6)
    synth.add_argument("--n-lat", type=int, default=16)
    synth.add_argument("--n-lon", type=int, default=32)
    synth.add_argument("--seed", type=int, default=0)

    ingest = dsub.add_parser("ingest", help="convert CF NetCDF files into shards")
    ingest.add_argument("inputs", nargs="+", help="NetCDF files readable by xarray")
    ingest.add_argument("--output", required=True)
    ingest.add_argument("--variables", default=None, help="comma-separated NetCDF variable names (default: all data variables)")
    ingest.add_argument(
        "--units", default=None, metavar="NAME=UNIT[,NAME=UNIT]",
        help="override a wrong or missing units attribute, e.g. T=degC (NAME: NetCDF, CF standard or canonical name)",
    )
    ingest.add_argument(
        "--rename", default=None, metavar="OLD=NEW[,OLD=NEW]",
        help="store a variable without a CF standard_name under a canonical name, e.g. UWND=u",
    )

    inspect = dsub.add_parser("inspect", help="print the schema and per-variable statistics")
    inspect.add_argument("data_dir")

    metabolic = dsub.add_parser(
        "metabolic", help="build metabolic-network graphs from cobra's offline models (textbook, iJO1366, salmonella)"
    )
    metabolic.add_argument("--output", default="data/metabolic", help="output directory (graphs.parquet + schema.json)")
    metabolic.add_argument("--seed", type=int, default=0, help="seed of the per-graph link split")

    spectra = dsub.add_parser(
        "spectra", help="WASP-43b (cube, phase-resolved spectrum) pairs: perturbed GCM through nemesispy's forward model"
    )
    spectra.add_argument("--output", default="data/wasp43b", help="output directory (shards + schema.json + observations.json)")
    spectra.add_argument("--n-samples", type=int, default=40, help="number of perturbed GCMs (about 5 s each on one CPU core)")
    spectra.add_argument("--seed", type=int, default=0, help="seed of the perturbation draws and the split")


    instructions = dsub.add_parser(
        "instructions", help="planet-science instructions with answers computed from a planet catalogue (exoplanet.eu)"
    )
    instructions.add_argument("--catalogue", default=None, help="CSV with exoplanet.eu column names (default: the table spright ships)")
    instructions.add_argument("--output", default="data/instructions", help="output directory (shards + schema.json)")
    instructions.add_argument("--seed", type=int, default=0, help="seed of the host-star split and the look-up fields")
    instructions.add_argument("--rename", default=None, help="THEIRS=OURS[,...] column renames for another catalogue")

    table = dsub.add_parser(
        "table", help="ingest a numeric CSV (one column per variable) for causal structure learning, with graph and regimes"
    )
    table.add_argument("csv", help="CSV with a header of variable names; every cell a number (except the regime column)")
    table.add_argument("--output", required=True, help="output directory (Parquet shards + schema.json)")
    table.add_argument("--graph", default=None, help="ground-truth edges: CSV with header Cause,Effect")
    table.add_argument("--regime-column", default=None, help="column holding each row's regime name (not a variable)")
    table.add_argument("--targets", default=None, help="CSV with header Regime,Targets (';'-separated names, empty, or unknown)")
    table.add_argument("--units", default=None, metavar="NAME=UNIT[,NAME=UNIT]", help="unit of a variable, e.g. conc=nM")
    table.add_argument("--log1p", default=None, metavar="COLS|all", help="comma list of columns (or all) to model as log1p")
    table.add_argument("--val-fraction", type=float, default=0.1, help="fraction of every regime's rows held out (0: none)")
    table.add_argument("--seed", type=int, default=0, help="seed of the validation draw")

    sachs = dsub.add_parser("sachs", help="Sachs et al. (2005) protein-signalling flow cytometry table (shipped by cdt)")
    sachs.add_argument("--subset", default="observational", choices=["observational", "full"],
                       help="observational: 853 CD3/CD28 rows; full: 7,466 rows in 9 regimes")
    sachs.add_argument("--output", default=None, help="output directory (default data/sachs_<subset>)")

    world = dsub.add_parser("planet-world", help="synthetic planets from a stated SCM, with interventional and counterfactual truth")
    world.add_argument("--output", default="data/planet_world", help="output directory")
    world.add_argument("--n-planets", type=int, default=2000, help="observational planets (each do-regime adds 300)")
    world.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrobio-hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parser(sub)
    train = sub.add_parser("train", help="train a model family (same code as recipes/train_<family>.py)")
    train.add_argument("family", choices=sorted(FAMILIES))
    train.add_argument("recipe_args", nargs=argparse.REMAINDER, help="[config.yaml] [--key value ...]")
    pipe = sub.add_parser("pipeline", help="run the phases of a pipeline YAML in order: skip finished ones, resume, rerun what changed")
    pipe.add_argument("file", help="pipeline YAML (e.g. recipes/configs/pipeline/planets.yaml)")
    pipe.add_argument("--only", default=None, metavar="PHASE", help="run this phase alone (its inputs must be finished)")
    pipe.add_argument("--from", dest="start", default=None, metavar="PHASE", help="rerun from this phase on")
    release = sub.add_parser("release", help="build an immutable model_cards/<name>/v<version>/ release (and push it)")
    release.add_argument("run_dir")
    release.add_argument("--name", required=True, help="model name, e.g. datacube-unet")
    release.add_argument("--version", required=True, help="semantic version, e.g. 1.0.0")
    release.add_argument("--output-root", default="model_cards")
    release.add_argument("--push", default=None, metavar="REPO_ID", help="also upload to this Hub repo (HF_ENDPOINT/HF_TOKEN) and tag v<version>")

    convert = sub.add_parser("convert", help="convert legacy weights into an astrobio-hf model directory")
    csub = convert.add_subparsers(dest="convert_command", required=True)
    legacy_vae = csub.add_parser("legacy-pathway-vae", help="the legacy trained_pathway_vae.pth (a state dict)")
    legacy_vae.add_argument("path", help="legacy .pth file (read with torch.load(weights_only=True))")
    legacy_vae.add_argument("--output", required=True, help="output directory (keep it outside the repository)")
    legacy_vae.add_argument("--graphs", default=None, help="legacy_pathway_graphs.npz to evaluate on (default: next to PATH)")

    evaluate = sub.add_parser("eval", help="evaluate a trained run on held-out data")
    evaluate.add_argument("family", choices=["diffusion"])
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--samplers", default="ddim,dpmsolver++,unipc", help="comma list of diffusers samplers")
    evaluate.add_argument("--steps", default="10,20,50", help="comma list of numbers of inference steps")
    evaluate.add_argument("--guidance", default="1.0,2.0", help="comma list of guidance scales")
    evaluate.add_argument("--samples-per-condition", type=int, default=8)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--seed", type=int, default=0)

    privacy = sub.add_parser("privacy", help="utility against privacy: the recipe without DP and at several epsilons, with a membership attack")
    privacy.add_argument("family", choices=["datacube", "cnn-vit", "language-model"])
    privacy.add_argument("--epsilons", default="1,3,8", help="comma list of target epsilons")
    privacy.add_argument("--output-root", default="runs/privacy", help="one run folder per setting, and the report")
    privacy.add_argument("--metric", default=None, help="test metric of metrics.json (default: model/nrmse, model/nrmse_mean, fine_tuned/heldout_loss)")
    privacy.add_argument("recipe_args", nargs=argparse.REMAINDER, help="[config.yaml] [--key value ...] of every run")

    tune = sub.add_parser("tune", help="Optuna study over any field of a recipe's dataclasses (each trial an ordinary run)")
    tune.add_argument("family", choices=sorted(FAMILIES))
    tune.add_argument("config", nargs="?", default=None, help="base config.yaml of the recipe (default: the recipe's defaults)")
    tune.add_argument("--space", required=True, help="search space YAML: field: {type: float|int|categorical, low, high, log, step, choices}")
    tune.add_argument("--n-trials", type=int, required=True, help="finished trials (complete + pruned + failed) the study should hold; a rerun adds the missing ones")
    tune.add_argument("--storage", default=None, help="sqlite:///path.db or an Optuna journal file *.log/*.jsonl (default: sqlite:///<output-dir>/study.db)")
    tune.add_argument("--study-name", default=None, help="default: the family name")
    tune.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    tune.add_argument("--pruner-startup-trials", type=int, default=5, help="median pruner: complete trials before any pruning")
    tune.add_argument("--pruner-warmup-steps", type=int, default=0, help="median: steps before a trial may be pruned; hyperband: min resource")
    tune.add_argument("--metric", default="val/loss", help="validation metric reported to the trial, e.g. val/loss, val/model/nrmse_mean")
    tune.add_argument("--direction", default="minimize", choices=["minimize", "maximize"])
    tune.add_argument("--output-dir", default=None, help="study folder (default: runs/tune/<family>)")
    tune.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    tune.add_argument("--enqueue", action="append", default=[], metavar="JSON", help='a trial to run first, e.g. \'{"learning_rate": 1e-3}\' (repeatable)')
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="recipe field for every trial, over the base config (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; bad input (ValueError, FileNotFoundError, a held output folder, a run whose steps keep going
    non-finite) is reported as one line, exit status 2.
    Set ASTROBIO_HF_TRACEBACK=1 to see the full traceback instead."""
    from astrobio_hf.training.errors import USER_ERRORS, one_line

    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    try:
        return _run(args)
    except USER_ERRORS as err:
        if os.environ.get("ASTROBIO_HF_TRACEBACK"):
            raise
        if os.environ.get("RANK", "0") == "0":  # once, not once per process of a launch
            print(one_line(err), file=sys.stderr)
        return 2


def _pairs(text: str | None, flag: str, form: str) -> dict[str, str] | None:
    """``"A=x,B=y"`` -> ``{"A": "x", "B": "y"}`` (None for None); a malformed item is a ValueError."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} expects {form}[,{form}], got {item!r} in {text!r}")
        out[key.strip()] = value.strip()
    return out


def _run(args: argparse.Namespace) -> int:

    if args.command == "data":
        if args.data_command == "synth":
            from astrobio_hf.data.synth import synthesize_planets

            schema = synthesize_planets(
                args.output,
                n_planets=args.n_planets,
                n_climate_steps=args.n_climate_steps,
                n_geological_steps=args.n_geological_steps,
                n_levels=args.n_levels,
                n_lat=args.n_lat,
                n_lon=args.n_lon,
                seed=args.seed,
            )
            print(f"wrote {args.output}: {schema.num_variables} variables {schema.variable_names}, cube {schema.cube_shape}")
        elif args.data_command == "ingest":
            from astrobio_hf.data.ingest import ingest_netcdf

            variables = [v.strip() for v in args.variables.split(",")] if args.variables else None
            schema = ingest_netcdf(
                args.inputs, args.output, variables=variables,
                units=_pairs(args.units, "--units", "NAME=UNIT"), rename=_pairs(args.rename, "--rename", "OLD=NEW"),
            )
            print(f"wrote {args.output}: {schema.num_variables} variables {schema.variable_names}, cube {schema.cube_shape}")
        elif args.data_command == "inspect":
            from astrobio_hf.data.inspect import describe_dataset

            print(describe_dataset(args.data_dir))
        elif args.data_command == "metabolic":
            from astrobio_hf.data.metabolic import write_metabolic_dataset

            schema = write_metabolic_dataset(args.output, seed=args.seed)
            organisms = "; ".join(
                f"{name}: {c['graphs']} graphs, {c['nodes']} nodes, {c['edges']} edges, {c['dropped_graphs']} dropped"
                for name, c in schema["counts"].items()
            )
            print(f"wrote {args.output}: {len(schema['node_feature_names'])} node features; {organisms}")
        elif args.data_command == "spectra":
            from astrobio_hf.data.spectra import (
                build_spectra_dataset,
                load_observations,
            )

            schema = build_spectra_dataset(args.output, n_samples=args.n_samples, seed=args.seed)
            obs = load_observations(args.output)
            print(
                f"wrote {args.output}: cube {schema.cube_shape}, spectra {schema.spectrum_shape} [{schema.spectrum_units}]; "
                f"unperturbed GCM chi2 = {obs['gcm_chi_squared']:.1f} over {obs['n_points']} points "
                f"(reduced {obs['gcm_reduced_chi_squared']:.2f}); {obs['build_seconds']:.0f}s"
            )
        elif args.data_command == "instructions":
            from astrobio_hf.data.instructions import write_instruction_dataset

            schema = write_instruction_dataset(args.output, args.catalogue, seed=args.seed,
                                               rename=_pairs(args.rename, "--rename", "THEIRS=OURS"))
            tasks = ", ".join(f"{t} {sum(info['counts'].values())}" for t, info in schema["tasks"].items())
            print(f"wrote {args.output}: {json.dumps(schema['counts'])} rows by split; per task: {tasks}")
        elif args.data_command in ("table", "sachs", "planet-world"):
            from astrobio_hf.data.table import ensure_sachs_dataset, ingest_table

            if args.data_command == "planet-world":
                from astrobio_hf.data.planet_world import write_planet_world_dataset

                output = args.output
                schema = write_planet_world_dataset(output, n_planets=args.n_planets, seed=args.seed)
            elif args.data_command == "table":
                log1p = args.log1p
                if log1p is not None and log1p.strip().lower() != "all":
                    log1p = [c.strip() for c in log1p.split(",") if c.strip()]
                output = args.output
                schema = ingest_table(
                    args.csv, output, graph=args.graph, regime_column=args.regime_column, targets=args.targets,
                    units=_pairs(args.units, "--units", "NAME=UNIT"), log1p=log1p, val_fraction=args.val_fraction,
                    seed=args.seed,
                )
            else:
                output = args.output or f"data/sachs_{args.subset}"
                schema = ensure_sachs_dataset(output, subset=args.subset)
            edges = "no ground-truth graph" if schema["edges"] is None else f"{len(schema['edges'])} edges"
            print(
                f"wrote {output}: {schema['rows']} rows ({schema['splits']['train']['rows']} train / "
                f"{schema['splits']['val']['rows']} val), {len(schema['variables'])} variables, "
                f"{len(schema['regimes'])} regime(s) [{', '.join(r['name'] for r in schema['regimes'])}], {edges}"
            )
        return 0

    if args.command == "release":
        from astrobio_hf.hub.release import release_run

        path = release_run(args.run_dir, name=args.name, version=args.version, output_root=args.output_root, push=args.push)
        print(f"released {path}" + (f" and pushed it to {args.push}" if args.push else ""))
        return 0

    if args.command == "convert":
        from astrobio_hf.hub.convert_legacy import convert_legacy_pathway_vae

        out = convert_legacy_pathway_vae(args.path, args.output, graphs_path=args.graphs)
        print(f"wrote {out}: config.json, model.safetensors, README.md")
        return 0

    if args.command == "eval":
        from astrobio_hf.evaluation.climate_diffusion import evaluate_and_report

        rows = evaluate_and_report(
            args.run_dir,
            samplers=tuple(s.strip() for s in args.samplers.split(",")),
            steps=tuple(int(s) for s in args.steps.split(",")),
            guidance_scales=tuple(float(s) for s in args.guidance.split(",")),
            samples_per_condition=args.samples_per_condition,
            split=args.split,
            seed=args.seed,
        )
        print(f"{len(rows)} settings evaluated; table in {args.run_dir}/eval/ and {args.run_dir}/README.md")
        return 0

    if args.command == "privacy":
        from astrobio_hf.evaluation.privacy_report import run_privacy_report

        # the report's own options may come anywhere after the family; the rest goes to every run of the recipe
        own = argparse.ArgumentParser(add_help=False)
        for flag in ("--epsilons", "--output-root", "--metric"):
            own.add_argument(flag, default=getattr(args, flag.lstrip("-").replace("-", "_")))
        opts, recipe_args = own.parse_known_args(list(args.recipe_args))
        epsilons = [float(e) for e in opts.epsilons.split(",") if e.strip()]
        report = run_privacy_report(args.family, recipe_args, epsilons, opts.output_root, metric=opts.metric)
        args.output_root = opts.output_root
        print(f"{len(report['rows'])} settings; report in {args.output_root}/privacy_report.md and privacy_utility.png")
        return 0

    if args.command == "tune":
        from astrobio_hf.tune import run_study

        summary = run_study(
            args.family, args.config, space=args.space, n_trials=args.n_trials, storage=args.storage, study_name=args.study_name,
            pruner=args.pruner, pruner_startup_trials=args.pruner_startup_trials, pruner_warmup_steps=args.pruner_warmup_steps,
            metric=args.metric, direction=args.direction, output_dir=args.output_dir, seed=args.seed,
            enqueue=args.enqueue, overrides=args.overrides,
        )
        if summary is not None:  # rank 0
            print(summary.text())
        return 0

    if args.command == "pipeline":
        from astrobio_hf.pipeline import run_pipeline

        manifest = run_pipeline(args.file, only=args.only, start=args.start)
        print(f"{len(manifest['phases'])} of {len(manifest['order'])} phases finished; manifest and summary card beside the phases' folders")
        return 0

    if args.command == "train":
        import importlib

        recipe = importlib.import_module(FAMILIES[args.family])
        recipe.main(list(args.recipe_args))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
