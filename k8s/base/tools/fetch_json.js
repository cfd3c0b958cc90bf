// Fetches a JSON document over HTTP (the `http` module: only hosts in
// [scripting] http_allowlist are reachable) and caches it for a minute in the tool's `kv`.
import http from "http";
import kv from "kv";

export const description = "Fetch a JSON document from an allowed host and return it (cached for 60 s).";
export const keywords = ["http", "fetch", "json", "api"];
export const visibility = "ondemand";
export const parameters = {
  type: "object",
  properties: { url: { type: "string", description: "http(s) URL on an allowlisted host" } },
  required: ["url"],
};

export default function ({ url }) {
  const cached = kv.get(url);
  if (cached !== null) return { url, cached: true, data: cached };
  const res = http.fetch(url, { headers: { accept: "application/json" } });
  if (!res.ok) throw new Error("GET " + url + " answered " + res.status);
  const data = JSON.parse(res.body);
  kv.set(url, data, 60000);
  return { url, cached: false, data };
}
