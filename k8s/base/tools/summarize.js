// Summarizes a text with a model, through the router (the `ai` module).
import ai from "ai";

export const description = "Summarize a text in one or two sentences using a language model.";
export const keywords = ["summary", "llm", "text"];
export const visibility = "ondemand";
export const parameters = {
  type: "object",
  properties: {
    text: { type: "string" },
    model: { type: "string", description: "Model or group to use (default: auto)" },
  },
  required: ["text"],
};

export default function ({ text, model }) {
  return ai.chat(
    [
      { role: "system", content: "Summarize the user's text in one or two sentences." },
      { role: "user", content: text },
    ],
    { model: model || "auto", max_tokens: 200 },
  );
}
