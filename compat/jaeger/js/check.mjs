// Drives OpenTelemetry JS's Jaeger remote sampler against a /sampling
// endpoint, for compat/jaeger's Go test: node check.mjs BASE_URL SERVICE.
//
// Each line on stdin is a phase: a JSON list of probes
// [{"span": "POST /checkout", "traceId": "<32 hex>", "sampled": true}, ...].
// The script polls the sampler (which refetches every 20 ms) until every
// probe is decided as expected, then prints "ok"; after 30 s it prints
// "fail: ..." and exits 1. End of input ends it with status 0.
import { createInterface } from 'node:readline';
import { ROOT_CONTEXT, SpanKind } from '@opentelemetry/api';
import { JaegerRemoteSampler } from '@opentelemetry/sampler-jaeger-remote';
import { AlwaysOffSampler, SamplingDecision } from '@opentelemetry/sdk-trace';

const [endpoint, serviceName] = process.argv.slice(2);
const sampler = new JaegerRemoteSampler({
  endpoint,
  serviceName,
  poolingInterval: 20,
  initialSampler: new AlwaysOffSampler(),
});

function mismatches(probes) {
  return probes.filter((p) => {
    const r = sampler.shouldSample(ROOT_CONTEXT, p.traceId, p.span, SpanKind.SERVER, {}, []);
    return (r.decision === SamplingDecision.RECORD_AND_SAMPLED) !== p.sampled;
  });
}

async function settle(probes) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const bad = mismatches(probes);
    if (bad.length === 0) return null;
    if (Date.now() > deadline) return `${JSON.stringify(bad)} not decided as expected by ${sampler}`;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') continue;
  const err = await settle(JSON.parse(line));
  if (err) {
    console.log(`fail: ${err}`);
    process.exit(1);
  }
  console.log('ok');
}
// The sampler's polling interval is never cleared: leave without waiting.
process.exit(0);
