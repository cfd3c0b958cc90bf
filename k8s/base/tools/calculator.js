// A calculator: evaluates an arithmetic expression with the `expr` library.
import { evaluate } from "expr";

export const description = "Evaluate an arithmetic expression (+ - * / % ^ and parentheses).";
export const keywords = ["math", "arithmetic", "compute"];
export const parameters = {
  type: "object",
  properties: { expression: { type: "string", description: "e.g. (2 + 3) * 4" } },
  required: ["expression"],
};

export default function ({ expression }) {
  const value = evaluate(expression);
  if (!Number.isFinite(value)) throw new Error("the result is not a finite number");
  return { expression, value };
}
