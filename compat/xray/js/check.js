// Drives the AWS X-Ray SDK for Node.js's centralized sampler (the one its
// middleware calls for every incoming request) against the X-Ray API named
// by AWS_XRAY_DAEMON_ADDRESS, for compat/xray's Go test: node check.js.
//
// Each line on stdin is one JSON command; each answer is one JSON line:
//   {"op": "decide", "service": S, "n": N}   decides N requests of service S
//       → {"decisions": [rule name, or false when not sampled, ...]}
//   {"op": "traffic", "services": [S...], "everyMs": M}   from now on decides
//       one request of each service every M ms, as live traffic would
//       → {"ok": true}
//   {"op": "state", "rule": R}   what the SDK holds for rule R
//       → {"rules": [names], "lastUpdated": s, "quota": q, "ttl": s,
//          "rate": r}
// End of input ends it with status 0.
'use strict';
const readline = require('node:readline');
const AWSXRay = require('aws-xray-sdk-core');

// The SDK logs to the console; stdout carries the answers.
const quiet = () => {};
AWSXRay.setLogger({ error: quiet, warn: quiet, info: quiet, debug: quiet });

const sampler = AWSXRay.middleware.sampler;

// A request as the SDK's HTTP middleware describes it to the sampler.
function decide(service) {
  return sampler.shouldSample({ host: 'shop.example', httpMethod: 'GET', urlPath: '/checkout', serviceName: service });
}

const timers = [];
const commands = {
  decide({ service, n }) {
    const decisions = [];
    for (let i = 0; i < n; i++) decisions.push(decide(service));
    return { decisions };
  },
  traffic({ services, everyMs }) {
    timers.push(setInterval(() => services.forEach(decide), everyMs));
    return { ok: true };
  },
  state({ rule }) {
    const cache = sampler.ruleCache;
    const r = cache.getRules().find((x) => x.getName() === rule);
    const res = r ? r.getReservoir() : {};
    return {
      rules: cache.getRules().map((x) => x.getName()),
      lastUpdated: cache.getLastUpdated(),
      quota: res.quota ?? null,
      ttl: res.TTL ?? null,
      rate: r ? r.getRate() : null,
    };
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const cmd = JSON.parse(line);
  const run = commands[cmd.op];
  process.stdout.write(JSON.stringify(run ? run(cmd) : { error: `unknown op ${cmd.op}` }) + '\n');
});
lines.on('close', () => {
  timers.forEach(clearInterval);
  process.exit(0);
});
