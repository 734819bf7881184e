// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, as the specification defines them (the trace SDK
// no longer reads them itself). Default: parentbased_always_on.
import type { Sampler } from "@opentelemetry/sdk-trace";
import { invalidSetting } from "../config";

type Env = Record<string, string | undefined>;

/**
 * Samples a span linked to a sampled span (a batch that decided a sampled request), whatever the
 * ratio, so a sampled request's trace never links to a batch that was dropped; else asks `base`.
 */
async function followingLinks(base: Sampler): Promise<Sampler> {
  const { SamplingDecision } = await import("@opentelemetry/sdk-trace");
  return {
    shouldSample(context, traceId, name, kind, attributes, links) {
      if (links.some((link) => (link.context.traceFlags & 1) === 1))
        return { decision: SamplingDecision.RECORD_AND_SAMPLED };
      return base.shouldSample(context, traceId, name, kind, attributes, links);
    },
    toString: () => `FollowingLinks{${base.toString()}}`,
  };
}

/** The sampler the environment names (following sampled links); an unknown name or a bad ratio is a start-up error. */
export async function sampler(env: Env): Promise<Sampler> {
  return followingLinks(await named(env));
}

async function named(env: Env): Promise<Sampler> {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } = await import(
    "@opentelemetry/sdk-trace"
  );
  const name = env.OTEL_TRACES_SAMPLER || "parentbased_always_on";
  const ratio = () => {
    const arg = env.OTEL_TRACES_SAMPLER_ARG ?? "1";
    const value = Number(arg);
    if (arg.trim() === "" || !Number.isFinite(value) || value < 0 || value > 1)
      throw invalidSetting("OTEL_TRACES_SAMPLER_ARG", arg, "expected a ratio from 0 to 1");
    return new TraceIdRatioBasedSampler(value);
  };
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return ratio();
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: ratio() });
    default:
      throw invalidSetting(
        "OTEL_TRACES_SAMPLER",
        name,
        "expected one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
      );
  }
}
