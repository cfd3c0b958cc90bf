// A tiny arithmetic expression evaluator (numbers, + - * / % ^, parentheses, unary minus),
// shared by tools that import it: `import { evaluate } from "expr";`
export function evaluate(text) {
  const tokens = String(text).match(/\d+(?:\.\d+)?(?:e[+-]?\d+)?|[-+*/%^()]/gi) || [];
  if (tokens.join("") !== String(text).replace(/\s+/g, "")) {
    throw new Error("unsupported characters in expression: " + text);
  }
  let i = 0;
  const peek = () => tokens[i];
  const next = () => tokens[i++];
  function primary() {
    const t = next();
    if (t === "(") {
      const v = sum();
      if (next() !== ")") throw new Error("missing )");
      return v;
    }
    if (t === "-") return -primary();
    if (t === "+") return primary();
    const n = Number(t);
    if (t === undefined || Number.isNaN(n)) throw new Error("expected a number");
    return n;
  }
  function power() {
    const b = primary();
    return peek() === "^" ? (next(), Math.pow(b, power())) : b;
  }
  function product() {
    let v = power();
    while (peek() === "*" || peek() === "/" || peek() === "%") {
      const op = next();
      const r = power();
      v = op === "*" ? v * r : op === "/" ? v / r : v % r;
    }
    return v;
  }
  function sum() {
    let v = product();
    while (peek() === "+" || peek() === "-") {
      v = next() === "+" ? v + product() : v - product();
    }
    return v;
  }
  const v = sum();
  if (i !== tokens.length) throw new Error("unexpected " + peek());
  return v;
}
