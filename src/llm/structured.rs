//! Constrained output: an answer that is exactly the asked number of list items, each one line of
//! bounded length. The `local` provider decodes under a llama.cpp GBNF grammar
//! ([`list_grammar`]); the `openai` provider asks for a JSON-schema structured answer
//! ([`response_format`]) and reads it with the ordinary parser
//! ([`crate::filter::parse_answer`] takes a JSON array anywhere in the answer), which also reads
//! a plain list from an endpoint that ignores `response_format`.

use serde::{Deserialize, Serialize};

/// The shape a structured generator's answers are held to (part of its identity, so of every
/// call key).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shape {
    /// The longest list item, in characters.
    pub item_chars: usize,
}

/// Shortest list item the grammar admits, in characters (a sentence shorter than this is noise).
pub const MIN_ITEM_CHARS: usize = 20;

/// The name of the grammar [`list_grammar`] writes (part of a local structured generator's
/// identity, so of its call keys).
pub const LIST_GRAMMAR: &str = "one-sentence-per-item";

/// A GBNF grammar (llama.cpp's `grammars/README.md` syntax) admitting exactly `items` numbered
/// lines `1. …` to `N. …`, separated by one newline, each item one sentence: it starts with a
/// letter, a digit or `"`, holds no newline and no period followed by a space (a period inside a
/// word, as in `e.g.`, `1.2.3.4` or `evil.com`, is fine), ends with `.`, and has
/// [`MIN_ITEM_CHARS`] to `item_chars` characters (a period inside a word counts with the
/// character after it as one unit of the bound, so such an item can run a few characters over).
/// Nothing before or after the list: the model can only stop once the list is complete.
///
/// One sentence per item is the shape of the datasets (a row is a sentence). It also lets the
/// model end an item where it ends its sentence: a model that would go on with a second sentence
/// has its space after the period rejected, and the local sampler then ends the item (the
/// newline, or the end of the answer after the last item; see `local::CallSampler::sample`).
/// Under the first grammar (any text up to the bound) SmolLM2-135M ran on past the bound in 412
/// of 720 items of `experiments/tram.toml`, each cut mid-word.
///
/// `items` must be ≥ 1; `item_chars` is raised to at least [`MIN_ITEM_CHARS`].
pub fn list_grammar(items: usize, item_chars: usize) -> String {
    let max = item_chars.max(MIN_ITEM_CHARS);
    // First and last characters are fixed, the middle is bounded.
    let (lo, hi) = (MIN_ITEM_CHARS - 2, max - 2);
    let list = (1..=items.max(1))
        .map(|i| format!("\"{i}. \" item"))
        .collect::<Vec<_>>()
        .join(" \"\\n\" ");
    format!(
        "root ::= {list}\nitem ::= [A-Za-z0-9\"] unit{{{lo},{hi}}} \".\"\nunit ::= [^\\n.] | \".\" [^\\n. ]\n"
    )
}

/// The `response_format` of an OpenAI-compatible request: a strict JSON schema of an object
/// `{"sentences": [...]}` with exactly `items` strings of at most `item_chars` characters
/// (OpenAI's structured outputs; vLLM, llama-server and Ollama accept the same field).
pub fn response_format(items: usize, item_chars: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "json_schema",
        "json_schema": {
            "name": "sentences",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "sentences": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": item_chars},
                        "minItems": items,
                        "maxItems": items
                    }
                },
                "required": ["sentences"],
                "additionalProperties": false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_lists_exactly_the_asked_items() {
        assert_eq!(
            list_grammar(3, 120),
            "root ::= \"1. \" item \"\\n\" \"2. \" item \"\\n\" \"3. \" item\n\
             item ::= [A-Za-z0-9\"] unit{18,118} \".\"\n\
             unit ::= [^\\n.] | \".\" [^\\n. ]\n"
        );
        assert_eq!(
            list_grammar(1, 5),
            "root ::= \"1. \" item\nitem ::= [A-Za-z0-9\"] unit{18,18} \".\"\nunit ::= [^\\n.] | \".\" [^\\n. ]\n"
        );
    }

    #[test]
    fn the_schema_bounds_count_and_length() {
        let f = response_format(4, 200);
        let arr = &f["json_schema"]["schema"]["properties"]["sentences"];
        assert_eq!(arr["minItems"], 4);
        assert_eq!(arr["maxItems"], 4);
        assert_eq!(arr["items"]["maxLength"], 200);
        assert_eq!(f["type"], "json_schema");
        assert_eq!(f["json_schema"]["strict"], true);
    }

    #[test]
    fn a_schema_answer_parses_into_its_sentences() {
        let c = crate::filter::parse_answer(
            r#"{"sentences": ["The loader was packed with UPX.", "Strings were XOR-encoded."]}"#,
        );
        let t: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            t,
            [
                "The loader was packed with UPX.",
                "Strings were XOR-encoded."
            ]
        );
    }
}
