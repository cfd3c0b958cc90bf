// A routing script ([routing] script): long prompts go to the `long` group when there is
// one; everything else to the least loaded available target (then the fastest).
export default function route({ request, candidates, groups }) {
  if (request.estimated_tokens > 8000 && groups.includes("long")) return "long";
  const ok = candidates.filter((c) => c.available);
  if (ok.length === 0) return candidates[0].target;
  ok.sort((a, b) => a.load - b.load || (a.latency_ms ?? 0) - (b.latency_ms ?? 0));
  return ok[0].target;
}
