//! What OpenAI-compatible servers really answer to a chat completion, read leniently.
//!
//! async-openai's typed response requires `id`, `object`, `created` and `choices[].index`, which
//! proxies and small servers leave out; this reads only what synthcti uses (the first choice's
//! `content` and `finish_reason`, and `usage` when present), and recognises the shapes that are
//! not an answer: an `error` object sent with HTTP 200 (LM Studio, llama-server variants), a choice
//! without text because the model was cut off (`finish_reason: "length"`, typically inside a
//! reasoning model's `reasoning_content`). Reasoning (`reasoning_content`, `reasoning`) is never
//! read as the answer; `<think>…</think>` inside the content is removed by
//! [`crate::filter::parse_answer`].

use serde::Deserialize;

/// A chat-completions response body; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub choices: Option<Vec<Choice>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// An error object in a successful (HTTP 200) response.
    #[serde(default)]
    pub error: Option<ServerError>,
}

/// One choice: its message and why it stopped.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant's message. Reasoning fields are deliberately not read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
}

/// Token counts as the server reports them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
}

/// An `error` object: `message` is what the server says; `code`/`type` vary by server.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

impl ServerError {
    /// ` (type T, code C): message`, the type and code where the server sent them, and advice
    /// when the message is about the context size (llama-server, Ollama and vLLM word it
    /// "context size", "context length" or "maximum context").
    pub fn describe(&self) -> String {
        let mut what = vec![];
        if let Some(k) = &self.kind {
            what.push(format!("type {k}"));
        }
        if let Some(c) = self.code.as_ref().filter(|c| !c.is_null()) {
            what.push(format!("code {c}"));
        }
        format!(
            "{}: {}",
            if what.is_empty() {
                String::new()
            } else {
                format!(" ({})", what.join(", "))
            },
            with_context_advice(self.message.as_deref().unwrap_or("(no message)"))
        )
    }
}

/// A server's error message, followed by [`context_advice`] when it is about the context size
/// (its final period dropped first: "…exceeded; the prompt…", not "…exceeded.; the prompt…").
pub fn with_context_advice(message: &str) -> String {
    match context_advice(message) {
        "" => message.to_string(),
        advice => format!("{}{advice}", message.trim_end_matches('.')),
    }
}

/// Advice for a server error about the context size, or nothing.
pub fn context_advice(message: &str) -> &'static str {
    let m = message.to_lowercase();
    if [
        "context size",
        "context length",
        "maximum context",
        "context window",
    ]
    .iter()
    .any(|p| m.contains(p))
    {
        "; the prompt and `max_tokens` do not fit the model's context on the server: raise the server's context (llama-server `-c`, Ollama `num_ctx`, vLLM `--max-model-len`), or lower this generator's `max_tokens` or `augment.per_call`"
    } else {
        ""
    }
}

/// An error body a server sent (`{"error": {...}}`), read leniently: `code` may be a number, a
/// string or null, any field may be missing. `None` when the body is not such an object.
pub fn error_body(body: &str) -> Option<ServerError> {
    #[derive(Deserialize)]
    struct Wrapped {
        error: ServerError,
    }
    serde_json::from_str::<Wrapped>(body).ok().map(|w| w.error)
}

/// The usable part of a response: the text, why it stopped, and the token counts when the server
/// sent non-zero ones (prompt, completion).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub finish_reason: String,
    pub usage: Option<(u64, u64)>,
}

impl ChatResponse {
    /// The reply, or why there is none (one sentence naming what the server sent and what to do).
    ///
    /// Errors: an `error` object (its message, type and code); no choice; a choice without text
    /// (with `finish_reason=length`: says to raise the generator's `max_tokens`).
    pub fn reply(&self, max_tokens: u32) -> Result<Reply, String> {
        if let Some(e) = &self.error {
            return Err(format!(
                "the server answered HTTP 200 with an error{}",
                e.describe()
            ));
        }
        let choice = self
            .choices
            .as_ref()
            .and_then(|c| c.first())
            .ok_or_else(|| "malformed response: no choices".to_string())?;
        let finish_reason = choice
            .finish_reason
            .clone()
            .unwrap_or_else(|| "unknown".into());
        let text = choice.message.as_ref().and_then(|m| m.content.clone());
        let text = match text {
            Some(t) if !t.trim().is_empty() || finish_reason != "length" => t,
            _ if finish_reason == "length" => {
                return Err(format!(
                    "the answer was cut off before any text (finish_reason=length: the model spent all max_tokens = {max_tokens} tokens, e.g. on reasoning); raise the generator's `max_tokens`"
                ));
            }
            _ => {
                return Err(format!(
                    "malformed response: the choice has no text content (finish_reason={finish_reason})"
                ));
            }
        };
        let usage = self
            .usage
            .as_ref()
            .map(|u| {
                (
                    u.prompt_tokens.unwrap_or(0),
                    u.completion_tokens.unwrap_or(0),
                )
            })
            .filter(|&(p, c)| p + c > 0);
        Ok(Reply {
            text,
            finish_reason,
            usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> Result<Reply, String> {
        serde_json::from_str::<ChatResponse>(body)
            .unwrap()
            .reply(64)
    }

    #[test]
    fn a_response_without_id_object_created_usage_or_index_is_used() {
        let r = reply(r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"1. A."},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(
            r,
            Reply {
                text: "1. A.".into(),
                finish_reason: "stop".into(),
                usage: None
            }
        );
    }

    #[test]
    fn usage_null_or_zero_is_no_usage_and_real_usage_is_kept() {
        let ok = r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":"#;
        assert_eq!(reply(&format!("{ok}null}}")).unwrap().usage, None);
        assert_eq!(
            reply(&format!(
                "{ok}{{\"prompt_tokens\":0,\"completion_tokens\":0}}}}"
            ))
            .unwrap()
            .usage,
            None
        );
        assert_eq!(
            reply(&format!(
                "{ok}{{\"prompt_tokens\":100,\"completion_tokens\":50,\"total_tokens\":150}}}}"
            ))
            .unwrap()
            .usage,
            Some((100, 50))
        );
    }

    #[test]
    fn null_content_cut_off_names_finish_reason_length_and_max_tokens() {
        let e = reply(r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning_content":"Okay, the user wants"},"finish_reason":"length"}]}"#).unwrap_err();
        assert_eq!(
            e,
            "the answer was cut off before any text (finish_reason=length: the model spent all max_tokens = 64 tokens, e.g. on reasoning); raise the generator's `max_tokens`"
        );
    }

    #[test]
    fn reasoning_content_is_never_the_answer() {
        let r = reply(r#"{"choices":[{"message":{"content":"1. Real.","reasoning_content":"1. Thinking."},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(r.text, "1. Real.");
        let e = reply(r#"{"choices":[{"message":{"content":null,"reasoning_content":"1. Thinking."},"finish_reason":"stop"}]}"#).unwrap_err();
        assert_eq!(
            e,
            "malformed response: the choice has no text content (finish_reason=stop)"
        );
    }

    #[test]
    fn an_error_object_in_a_200_answer_names_the_servers_message() {
        let e = reply(r#"{"error":{"code":400,"message":"the request exceeds the available context size. try increasing the context size or enable context shift","type":"exceed_context_size_error","n_prompt_tokens":1407,"n_ctx":256}}"#).unwrap_err();
        assert_eq!(
            e,
            "the server answered HTTP 200 with an error (type exceed_context_size_error, code 400): the request exceeds the available context size. try increasing the context size or enable context shift; the prompt and `max_tokens` do not fit the model's context on the server: raise the server's context (llama-server `-c`, Ollama `num_ctx`, vLLM `--max-model-len`), or lower this generator's `max_tokens` or `augment.per_call`"
        );
    }

    #[test]
    fn an_error_body_reads_with_a_numeric_code_and_only_context_errors_get_context_advice() {
        // llama-server's context error: `code` a number, which async-openai's typed error
        // rejects.
        let e = error_body(
            r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#,
        )
        .unwrap();
        assert_eq!(
            e.describe(),
            " (type server_error, code 500): Context size has been exceeded; the prompt and `max_tokens` do not fit the model's context on the server: raise the server's context (llama-server `-c`, Ollama `num_ctx`, vLLM `--max-model-len`), or lower this generator's `max_tokens` or `augment.per_call`"
        );
        let boom = error_body(r#"{"error":{"message":"boom"}}"#).unwrap();
        assert_eq!(boom.describe(), ": boom");
        assert!(error_body("<html>Bad Gateway</html>").is_none());
        assert!(error_body(r#"{"choices":[]}"#).is_none());
        assert_eq!(
            context_advice("This model's maximum context length is 8192 tokens"),
            context_advice("context size exceeded")
        );
        assert_eq!(context_advice("rate limited"), "");
    }

    #[test]
    fn no_choices_is_malformed() {
        assert_eq!(
            reply(r#"{"choices":[]}"#).unwrap_err(),
            "malformed response: no choices"
        );
    }
}
