"""The markdown table of each benchmark's JSON result (no torch here: bench.report uses these too)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ms(seconds: Any) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def header(result: dict[str, Any], title: str) -> list[str]:
    env = result.get("environment", {})
    dirty = " (dirty tree)" if env.get("git_dirty") else ""
    lines = [f"# {title}", "",
             f"Measured on {env.get('device_name', '?')} ({env.get('device', '?')}), torch {env.get('torch', '?')}, "
             f"commit `{str(env.get('git_commit', '?'))[:12]}`{dirty}, {env.get('date', '?')}."]
    if env.get("device") != "cuda":
        lines.append(f"CPU run ({env.get('cpu_count')} cores, load average {env.get('loadavg_1m')} at the start, "
                     f"{env.get('torch_threads')} torch threads).")
    return lines + [""]


def engine(result: dict[str, Any]) -> str:
    s, c, ceil = result["settings"], result["correctness"], result["ceiling"]
    loops = s["loops"]
    steps_list = s["steps"] if isinstance(s["steps"], list) else [s["steps"]]
    on_cpu = result.get("environment", {}).get("device") != "cuda"
    mode = (f"the engine's CPU backend {s.get('cpu_backend') or 'eager'} (WORKER_CPU_BACKEND)" if on_cpu else
            f"the engine's CUDA mode (WORKER_ACCEL) {'on' if s.get('accel') else 'off'}")
    lines = header(result, "Benchmark 1: sampling engine")
    lines += [f"{s['model']} ({s['parameters']:,} parameters, {'x'.join(map(str, s['image_shape']))}), DDIM "
              f"{' and '.join(map(str, steps_list))} steps, eta 0, CFG scale {_f(s['guidance_scale'], 1)}, class "
              f"{s['class_label']}; {mode}. {result['flops']['per_row'] / 1e9:.3f} GFLOP per forward row (x 2 rows "
              f"per image per step with CFG). Ceiling: {ceil['flops_per_s'] / 1e12:.2f} TFLOP/s, a {ceil['dtype']} "
              f"{ceil['matmul_n']}^3 matmul ({ceil['note']})."
              + (" The loops of each row were timed interleaved, one run of each in turn; figures are medians."
                 if s.get("timing") == "interleaved" else ""),
              "",
              "| steps | batch | " + " | ".join(f"{loop} img/s" for loop in loops) + " | project/peer | project/seed | "
              + " | ".join(f"{loop} % of ceiling" for loop in loops) + " |",
              "|---:|---:|" + "---:|" * (2 * len(loops) + 2)]
    for row in result["results"]:
        def ips(loop: str, row: dict = row) -> str:
            r = row.get(loop) or {}
            return _f(r.get("images_per_s")) if "error" not in r else r["error"][:40]
        lines.append(f"| {row.get('steps', steps_list[0])} | {row['batch']} | "
                     + " | ".join(ips(loop) for loop in loops)
                     + f" | {_f(row.get('project_over_peer'))} | {_f(row.get('project_over_seed'))} | "
                     + " | ".join(_pct((row.get(loop) or {}).get("fraction_of_ceiling")) for loop in loops) + " |")
    served = c.get("served_mode") or {}
    lines += ["", f"Correctness (same x_T, DDIM {c['steps']} steps, eta 0, {c['batch']} images): max abs difference "
                  f"of the engine in fp32 against the peer loop {c['max_abs_diff']:.2e} "
                  f"(tolerance {c['tolerance']:g}): "
                  f"**{'pass' if c['passed'] else 'FAIL'}**."]
    if served:
        how = ("bf16 CUDA mode" if served.get("accel") else
               f"CPU backend {s.get('cpu_backend')}" if on_cpu and s.get("cpu_backend") else "the same fp32 mode")
        lines.append(f"The engine as served ({how}) against the peer: max abs difference {served['max_abs_diff']:.2e}, "
                     f"mean {served['mean_abs_diff']:.2e} (images span [-1, 1]).")
    lines.append("")
    splits = result.get("step_split") or []
    if splits:
        lines += ["Where one step's time goes (best of 3 runs, DDIM "
                  f"{splits[0]['steps']} steps, per step): the forward pass, and the rest of the step on the host "
                  "(for the engine: guidance, sampler update, join and harvest; for the peer: cat, CFG and "
                  "scheduler.step).", "",
                  "| batch | loop | step ms | forward ms | host ms |", "|---:|---|---:|---:|---:|"]
        for sp in splits:
            for loop in ("project", "project_fp32", "peer"):
                r = sp[loop]
                lines.append(f"| {sp['batch']} | {loop} | {r['step_ms']:.2f} | {r['forward_ms']:.2f} | "
                             f"{r['host_ms']:.2f} |")
        lines.append("")
    prof = result.get("profile")
    if prof:
        busy = prof.get("device_busy_s")
        lines += [f"Profile of one project run at batch {prof['batch']}: wall {prof['wall_s']:.3f} s"
                  + (f", device busy {busy:.3f} s ({100 * busy / prof['wall_s']:.0f}%)" if busy else "") + ".", "",
                  "| operator | calls | self device ms | self CPU ms |", "|---|---:|---:|---:|"]
        for e in prof["top"][:15]:
            lines.append(f"| `{e['name'][:60]}` | {e['calls']} | {e['self_device_ms']:.2f} | {e['self_cpu_ms']:.2f} |")
        lines.append("")
    lines += [f"- {loop}: {s[loop]}" for loop in ("project", "project_fp32", "peer", "seed") if loop in s] + [""]
    return "\n".join(lines)


def latency(result: dict[str, Any]) -> str:
    s, f, o = result["settings"], result["figures"], result["overhead"]
    req = s["request"]
    lines = header(result, "Benchmark 2: single-request latency")
    lines += [f"One image of {s['model']}, {req['sampler']} {req['steps']} steps, CFG scale {req['guidance_scale']}; "
              f"{s['requests']} sequential requests after {s['warmup_requests']} untimed ones, one worker, "
              f"LOG_LEVEL={s['log_level']}. Times in ms.", "",
              "| what | n | p50 | p95 | mean | min | max |", "|---|---:|---:|---:|---:|---:|---:|"]
    names = {"service": "submit to PNG, through the service", "engine_in_worker": "engine time in the worker",
             "engine_direct": "engine run directly"}
    for key, label in names.items():
        v = f[key]
        lines.append(f"| {label} | {v.get('n', 0)} | {_ms(v.get('p50'))} | {_ms(v.get('p95'))} | {_ms(v.get('mean'))} "
                     f"| {_ms(v.get('min'))} | {_ms(v.get('max'))} |")
    if result.get("errors"):
        lines += ["", f"**{result['errors']} requests failed**, e.g. {result['error_examples'][0]}"]
    lines += ["", f"Service overhead at p50: {_ms(o['p50_over_worker_engine_s'])} ms over the engine time in the "
                  f"worker, {_ms(o['p50_over_direct_engine_s'])} ms over the direct engine run.", "",
              f"- service: {s['service']}", f"- engine in the worker: {s['engine_in_worker']}",
              f"- engine run directly: {s['engine_direct']}", ""]
    return "\n".join(lines)


def load(result: dict[str, Any]) -> str:
    s = result["settings"]
    req = s["request"]
    lines = header(result, "Benchmark 3: the service under load")
    lines += [f"One-image requests of {s['model']}, {req['sampler']} {req['steps']} steps, CFG scale "
              f"{req['guidance_scale']}; one worker with MAX_BATCH_IMAGES={s['max_batch_images']}, "
              f"LOG_LEVEL={s['log_level']}; {s['rounds']} requests per client (at least {s['min_requests']} per "
              f"level, none started after {s['level_seconds']:g} s). Latency in ms, from POST to the PNG read.", "",
              "| clients | done | errors | images/s | engine images/s (batch) | % of engine | p50 | p95 | p99 "
              "| mean batch |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["results"]:
        lat = r["latency_s"]
        lines.append(f"| {r['clients']} | {r['completed']} | {r['errors']} | {_f(r['images_per_s'])} "
                     f"| {_f(r['engine_images_per_s'])} ({r['engine_batch']}) | {_pct(r['fraction_of_engine'])} "
                     f"| {_ms(lat.get('p50'))} | {_ms(lat.get('p95'))} | {_ms(lat.get('p99'))} "
                     f"| {_f(r['mean_batch_images'], 1)} |")
    lines += ["", f"- client: {s['client']}", f"- engine: {s['engine']}", ""]
    return "\n".join(lines)


def mixed(result: dict[str, Any]) -> str:
    s, ratio = result["settings"], result["static_over_continuous_short"]
    lines = header(result, "Benchmark 4: mixed load, continuous against static batching")
    lines += [f"{s['requests']} one-image requests of {s['model']}, Poisson arrivals at {s['rate_per_s']:.2f}/s "
              f"(trace seed {s['trace_seed']}, {s['trace_span_s']:.1f} s), {100 * s['short_fraction']:.0f}% short "
              f"({s['short']}), the rest long ({s['long']}), CFG scale {s['guidance_scale']}; engine step "
              f"{s['step_s_at_calibration_batch'] * 1e3:.1f} ms at batch {s['calibration_batch']}. Latency in ms, "
              "from arrival to the end of the request.", "",
              "| batching | short p50 | short p95 | long p50 | long p95 | mean batch | steps | wall s | unfinished |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in result["runs"].items():
        sh, lo = r["short_latency_s"], r["long_latency_s"]
        lines.append(f"| {mode} | {_ms(sh.get('p50'))} | {_ms(sh.get('p95'))} | {_ms(lo.get('p50'))} "
                     f"| {_ms(lo.get('p95'))} | {_f(r['mean_batch_images'], 1)} | {r['steps']} | {_f(r['wall_s'], 1)} "
                     f"| {r['unfinished']} |")
    lines += ["", f"Short requests, static over continuous: p50 x{_f(ratio.get('p50'))}, p95 x{_f(ratio.get('p95'))}.",
              "", f"Method: {s['method']}", ""]
    return "\n".join(lines)


def quickstart(result: dict[str, Any]) -> str:
    s, f = result["settings"], result["figures"]
    lines = header(result, "Benchmark 5: CPU quick start")
    lines += [f"`{s['command']}` from a cold start ({s['cold_start']}), then `POST /generate` with "
              f"`{s['request']}` (every other setting its default). {s['runs']} run(s). Seconds.", "",
              "| what | median | max |", "|---|---:|---:|"]
    names = {"up_s": "start to the 'imagegen is up' line", "first_png_s": "start to the first PNG of the request",
             "request_s": "the request alone (POST to the first PNG)"}
    for key, label in names.items():
        lines.append(f"| {label} | {_f(f[key].get('p50'))} | {_f(f[key].get('max'))} |")
    req = result["runs"][0]["request"] if result.get("runs") else {}
    if req:
        lines += ["", f"The request as the service normalized it: {req.get('sampler')} {req.get('steps')} steps, "
                      f"{req.get('guidance')} scale {req.get('guidance_scale')}, {req.get('num_images')} images."]
    lines.append("")
    return "\n".join(lines)


def bookkeeping(result: dict[str, Any]) -> str:
    r, s = result["results"], result["settings"]
    lines = header(result, "The worker's bookkeeping per job")
    lines += [f"{r['jobs']} {s['jobs']}; {s['model']} ({s['parameters']:,} parameters, from {s['model_store']}), the "
              f"engine's CUDA mode {'on' if s.get('accel') else 'off'}, DDIM {s['steps']} steps, CFG "
              f"{_f(s['guidance_scale'], 1)}, MAX_BATCH_IMAGES {s['max_batch_images']}. Outside the engine: the "
              "run's wall time less the worker's own engine-step seconds; Redis commands: INFO "
              "total_commands_processed over the run.", "",
              "| jobs | wall s | engine steps s | outside the engine, ms per job | Redis commands per job | jobs/s |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {r['jobs']} | {_f(r['wall_s'])} | {_f(r['engine_s'])} | {_f(r['outside_engine_ms_per_job'])} "
              f"| {_f(r['redis_commands_per_job'], 1)} | {_f(r['jobs_per_s'], 1)} |", ""]
    return "\n".join(lines)


def models(result: dict[str, Any]) -> str:
    s, r = result["settings"], result["results"]
    a, b = s["models"]
    burst, swap = r["burst"], r["swap"]
    both, one = swap["both_loaded"], swap["room_for_one"]
    lines = header(result, "Many models on one worker")
    lines += [f"{s['jobs']}; MAX_BATCH_IMAGES {s['max_batch_images']}. Model A {a} "
              f"({s['sizes_bytes'][a] / 2**20:.1f} MiB with the engine's reserve), model B {b} "
              f"({s['sizes_bytes'][b] / 2**20:.1f} MiB).", "",
              f"**A short job behind another model's burst.** {s['burst_jobs']} jobs of A ({s['burst_steps']} steps) "
              f"queued, then, once the worker ran them, one job of B ({s['short_steps']} steps):", "",
              "| B's wait, s | B's latency, s | a FIFO queue's wait (until A's last job started), s "
              "| A's burst span, s | A's jobs started while B waited |",
              "|---:|---:|---:|---:|---:|",
              f"| {_f(burst['short_wait_s'])} | {_f(burst['short_latency_s'])} | {_f(burst['fifo_wait_estimate_s'])} "
              f"| {_f(burst['burst_span_s'])} | {burst['burst_jobs_started_after_short_queued_before_it']} |", "",
              f"**A model swap.** {s['swap_jobs']} jobs ({s['swap_steps']} steps) alternating between A and B:", "",
              "| memory budget | wall s | latency p50 s | latency max s | loads | evictions | load s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, run in (("none: both loaded at start", both),
                       (f"{run_mib(one['budget_bytes'])}: room for one", one)):
        lines.append(f"| {label} | {_f(run['wall_s'])} | {_f(run['latency_s'].get('p50'))} "
                     f"| {_f(run['latency_s'].get('max'))} | {sum(run['loads'].values()):.0f} "
                     f"| {sum(run['evictions'].values()):.0f} | {_f(sum(run['load_seconds'].values()))} |")
    lines += ["", f"One swap costs {_f(swap['seconds_per_swap'])} s of wall time (the difference of the two runs "
                  f"over the loads); a load alone took {_f(swap['mean_load_s'])} s on average (read, sha256, "
                  "build, to the device, one warm-up step, on a background thread).", ""]
    return "\n".join(lines)


def run_mib(n: int | None) -> str:
    return "none" if n is None else f"{n / 2**20:.1f} MiB"
