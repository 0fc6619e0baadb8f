//! Detectors for synthetic sentences that are not worth training on, used by the filter stage:
//! reasoning blocks in an answer, literal ATT&CK references (a shortcut a classifier can learn
//! from synthetic sentences and never meet in a real report), meta-sentences about the task or the
//! list, and degenerate repetition.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::features::words;

/// A technique ID (`T1012`, `t1547.001`) or a MITRE / ATT&CK mention (`ATT&CK`, `ATT & CK`,
/// `ATT&amp;CK`), case-insensitive, on word boundaries.
static ATTACK_REF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bT\d{4}(?:\.\d{3})?\b|\bmitre\b|\batt\s*(?:&|&amp;)\s*ck\b")
        .expect("valid regex")
});

/// `<think>…</think>` / `<thinking>…</thinking>` blocks, and an unclosed one running to the end.
static THINK_BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)<(think|thinking)>.*?(?:</(?:think|thinking)>|\z)").expect("valid regex")
});

/// The answer without a reasoning model's reasoning: every `<think>…</think>` block (also
/// `<thinking>`; an unclosed one to the end of the answer), and everything before a lone closing
/// `</think>` (templates that open the block in the prompt). Answers without tags are returned
/// unchanged.
pub fn strip_reasoning(answer: &str) -> String {
    let lower = answer.to_ascii_lowercase();
    let mut s = answer;
    // A closing tag with no opening one before it: the reasoning began in the prompt.
    for close in ["</think>", "</thinking>"] {
        if let Some(i) = lower.find(close) {
            let open = &lower[..i];
            if !open.contains("<think") {
                s = &answer[i + close.len()..];
                break;
            }
        }
    }
    THINK_BLOCK.replace_all(s, "").into_owned()
}

/// The first literal ATT&CK reference in a sentence (a technique ID, `MITRE`, `ATT&CK`), if any.
pub fn attack_reference(sentence: &str) -> Option<&str> {
    ATTACK_REF.find(sentence).map(|m| m.as_str())
}

/// Openings of sentences that talk to the user or about the task instead of describing an attack.
const META_OPENINGS: &[&str] = &[
    "here is",
    "here are",
    "here's",
    "sure",
    "certainly",
    "of course",
    "okay",
    "ok,",
    "absolutely",
    "let's",
    "let us",
    "let me",
    "i will",
    "i'll",
    "i hope",
    "i can",
    "i have",
    "i've",
    "as an ai",
    "as requested",
    "note:",
    "below are",
    "these sentences",
    "these examples",
    "this sentence",
    "in this scenario",
    "to better understand",
    "to summarize",
    "in summary",
    "hope this",
    "the technique is:",
    "the behaviour:",
    "the behavior:",
    "what the technique is",
];

/// Phrases anywhere in a sentence that refer to the task, the list or the examples.
const META_PHRASES: &[&str] = &[
    "let's ",
    "let us ",
    "walk through",
    "more sentences",
    "new sentences",
    "example sentences",
    "these sentences",
    "the sentences above",
    "following sentences",
    "sentences from the",
    "this list",
    "the list above",
    "list of sentences",
    "as requested",
    "threat report excerpt",
    "the examples above",
    "the given examples",
    "numbered list",
    "one per line",
    "vary the threat actor",
    "in different words",
    "do not copy",
    // The prompt's persona and frame, echoed: "In one of the reports, a cyber threat intelligence
    // analyst identifies…", "This was added to our list…". None occurs in TRAM's or
    // CTI-to-MITRE's 18,034 real sentences.
    "threat intelligence analyst",
    "your report",
    "report covers",
    "our list",
    "in an example",
    // The reader addressed ("…you will need to choose…", "In case you want to know more…").
    // Not "you" alone, nor "you can see", "you should", "you want", "if you need": real report
    // sentences use them.
    "you added",
    "you will need",
    "you start",
    "you're reading",
    "you are asking",
    "want to know more",
    "read further",
    // The task's examples as the subject: "A new example was mentioned that…". None of the
    // phrases from "threat intelligence analyst" on occurs, as words, in TRAM's single- and
    // multi-label sentences or CTI-to-MITRE's two files (20,481 + 18,034 real sentences).
    "new report",
    "as instructed",
    "new example",
    "example was",
];

/// Words about the task a report sentence has no reason to use: the word "sentence" itself, the
/// report as a frame ("In one of the reports…", "The report details how…"), and a list number
/// after a colon at the end ("…refer to the following: 4."). Of TRAM's and CTI-to-MITRE's 18,034
/// real sentences one matches ("Typical drive-by compromise process: 1."); SmolLM2-135M wrote
/// them in 27 of 445.
static TASK_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\bsentences?\b|\b(?:in|from) (?:one of the reports|a different report)\b|\bthe report (?:details|describes|highlights|contains|covers|will)\b|:\s+\d{1,2}\.$",
    )
    .expect("valid regex")
});

/// A count of sentences ("a list of 5 sentences", "a 3-sentence summary", "five new sentences"):
/// the task's wording, which a sentence of a report has no reason to use.
static SENTENCE_COUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)[\s-]+(?:new\s+|more\s+|short\s+)?sentences?\b",
    )
    .expect("valid regex")
});

/// The model speaking as itself or to its reader: the second person ("Your task is to…", "You
/// can run commands…") and the first person singular ("In this response I wanted to…", "…give
/// me the details"). Report authors write "we"; 395 of the 36,975 distinct real sentences of
/// TRAM (single- and multi-label) and CTI-to-MITRE (both files) match, mostly advice to the
/// reader ("Encrypt your backup."), and 91 of 1,091 distinct sentences SmolLM2-135M wrote under
/// the shipped settings, nearly all about the task. "I" counts before a lower-case word other
/// than "and", "or" and "to" and not after a word a numeral follows ("Phase I and II", "Phase I
/// ended" do not), or as "I'm", "I've", "I'd", "I'll".
static PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i:\b(?:you|your|yours|yourself|yourselves|my|myself)\b)|(?:\b(\w+) )?\bI ([a-z]+)\b|\bI'(?:m|ve|d|ll)\b|\bme\b",
    )
    .expect("valid regex")
});

/// Words a Roman numeral follows ("Phase I", "Stage I").
const NUMBERED: &[&str] = &[
    "phase", "stage", "part", "type", "level", "class", "tier", "step", "chapter", "section",
    "version", "volume", "war", "appendix", "group", "category", "wave",
];

/// Whether a sentence speaks in the first person singular or the second person ([`PERSON`]).
fn in_person(sentence: &str) -> bool {
    let s = sentence.replace('\u{2019}', "'");
    PERSON.captures_iter(&s).any(|c| match c.get(2) {
        // "I" before a word: not "Phase I and II", not a numbered part ("Phase I ended").
        Some(next) => {
            !matches!(next.as_str(), "and" | "or" | "to")
                && !c
                    .get(1)
                    .is_some_and(|w| NUMBERED.contains(&w.as_str().to_lowercase().as_str()))
        }
        None => true,
    })
}

/// The answer's own frame: another item of the list ("Another example of a situation…", "…also
/// adding to the list.", "6 additional examples where…", "The list includes…"), the answer
/// itself ("This response can be considered…"), the report being written ("This report focuses
/// on…", "The report mentions…"), or an instruction ("Discuss the impact…", "Provide details…").
/// 12 of the 36,975 real sentences match ("Another example is the “jquery-3.3.1.min.js”…"), 33
/// of the 1,091 synthetic ones; the patterns added after a cold read ("In the second part of
/// the response…", "5 other reports about…", "This report will…") match none of the real ones.
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^(?:another|one more|yet another|a (?:second|third|fourth|fifth|new|further|final)) example\b",
        r"|(?i)^as an example\b|(?i)\bis (?:another|one more|yet another) example\b",
        r"|(?i)\bto (?:the|this|our|your|their) list\.?$|(?i)^(?:the|this) list (?:includes|contains|shows)\b",
        r"|(?i)^list list\b|(?i)^\d+ (?:more|additional|further) (?:examples?|details|ways|sentences|items)\b",
        // "This response", "the previous answer", "this report focuses…" are text references
        // (`TEXT_REFERENCE`), "my report" and "your report" the first or second person.
        r"|(?i)\b(?:a single|another) (?:response|answer)\b",
        r"|(?i)\bour (?:report|article|text) (?:mentions|mentioned|focuses on|discusses|discussed|explores)\b",
        r"|(?i)\bthe (?:report|article) (?:mentions|mentioned)\b",
        r"|(?-i:^(?:Discuss|Describe|Explain|Imagine|Summari[sz]e|Provide details|Listed for)\b)",
        // Found by a cold read of 703 kept sentences (three replicates of tram.toml): the answer
        // in parts, other list items counted, the report being written, list lines.
        r"|(?i)\bpart of the (?:response|answer)\b",
        r"|(?i)^\d+ (?:other|others|more|additional|further) (?:reports?|examples?|details|ways|sentences|items|that)\b",
        r"|(?i)\bthe report will\b|(?i)\blater in the report\b|(?i)\bthe list of reports\b",
        r"|(?i)^a new line\b|(?i)\blist of \d+ items\b",
        // Found by a cold read of 685 kept sentences (three replicates, stop 24); none of the
        // 36,967 distinct real sentences of TRAM and CTI-to-MITRE matches: a template's
        // placeholder left in ("[insert name or company here]", "[briefly describe…]"), other
        // list items pointed at, and an answer talking about itself.
        r"|(?i)\[(?:insert|briefly|topic|type|specific|name|company|describe)\b",
        r"|(?i)\b(?:part of|addition to) the list\b|(?i)\bthe answer is\b",
    ))
    .expect("valid regex")
});

/// A reference to a text rather than to what an adversary did: a report, document, example,
/// response, answer, message or list pointed at ("this report", "these examples", "the third
/// example", "the following responses", "the next message"; also "the previous report by ESET",
/// which is someone else's), its author ("The author has provided a report…"; not "the authors
/// of the malware"), "the above information", the report's content told by a pronoun ("It
/// describes how…"), and the report as a place ("…added to the report", "…discussed within the
/// content", "…described by the document", "the report above"). Out of context, such a
/// sentence points at the prompt or the answer, not at an attack.
///
/// Written after cold reads of sentences SmolLM2-135M wrote and the filter kept: 700 with
/// generator seed 100 (filter version 10), 23 of whose 27 meta-sentences it matches, and 696
/// with seed 200 (version 11), from which "It describes how…" and "…by the document" came. Both
/// counts are by construction, not measurements. 204 of the 36,975 distinct real sentences of
/// TRAM and CTI-to-MITRE match (0.55%: "…can be found in the Detections section of this
/// report.", "According to the author, …", "These messages contained OneNote attachments");
/// a synthetic sentence dropped for it costs yield, which the top-up recovers.
static TEXT_REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    const ORDINAL: &str = "(?:first|second|third|fourth|fifth|last|next|previous|following|above)";
    const TEXT: &str = "(?:reports?|documents?|articles?|papers?|texts?|examples?|responses?|answers?|messages?|list|items?|content)";
    Regex::new(&format!(
        concat!(
            r"(?i)\b(?:this|these|the {ord}|{ord}) {text}\b",
            r"|\bthe above (?:information|examples?|sentences?|text)\b",
            r"|\bthe report (?:above|below)\b|^this is where\b",
            r"|^(?:in detail, )?it (?:also )?(?:details|describes|mentions|discusses|explains|highlights|focuses on|summari[sz]es|outlines|provides details)\b",
            r"|\bby the document\b",
            r"|\b(?:additional|more|other) (?:ways|examples|items)\b",
            // The two below count only when the next word is not one of `TEXT_PLACE_NOT_BEFORE`
            // ("the authors of the malware", "in the report by Kaspersky"); the next word is
            // read, not matched, so a match after it ("…to the content by the document") is
            // still found.
            r"|\b(?P<guarded>the authors?|(?:to|in|within|into|by) the (?:report|content))\b",
        ),
        ord = ORDINAL,
        text = TEXT
    ))
    .expect("valid regex")
});

/// Words after which "the author" and "in the report" name someone else's author or report.
const TEXT_PLACE_NOT_BEFORE: &[&str] =
    &["of", "by", "from", "published", "titled", "on", "released"];

/// Discourse about the writing rather than about an attack, in eight families: a question ("What
/// tool was used to bypass UAC? 3.", "What is the nature of this malware…"); a pointer back into
/// the text ("As previously mentioned, …", "…as described above", "Includes the following new
/// information: …"); details announced as a label ("Additional details need to discuss…", "One
/// more detail: …"); the response and the question together, or the question alone ("The
/// response ended with the same question…"); the document or a report as the thing written
/// ("The document provides tips…", "This is a report that…", "Insecurity report: …"); the
/// writer's "we" planning the text ("we need to", "we are going to discuss", "What can we
/// do…"); an instruction to the writer ("Include…", "Update the document…", "Remember to…", "It
/// should have a number 1."); and the text's own section ("In this section…", "This
/// challenge…").
///
/// Written from the blind reads of stop 25 (908 distinct kept sentences of four generations, 32
/// of them meta) and the blind read of stop 26 (467 kept sentences of `tram.toml`'s replicates
/// 1 and 2, 5 meta); it matches all 37, by construction, and 4 of the 1,290 those reads found
/// fine. Of the 36,967 distinct real sentences of TRAM and CTI-to-MITRE (trimmed) it flags 270
/// that the other meta patterns do not (0.7%: a blog's questions, "How do packers work?", its
/// pointers back, "as described earlier", and its "we will discuss…"), so [`is_meta`] flags 960
/// where it flagged 690 (`tests/filters_on_real.rs`). Kept out after a review against real
/// sentences: "the task" (Scheduled Task), "in question" ("the sample in question"),
/// "described below" and "listed below" (a report's own tables), "reader" (Adobe Reader, card
/// readers), "topic" (an MQTT topic), "It should be noted", "a report on the host" sent to a C2,
/// "the document is designed to look like an invoice", "the user is asked to enable macros", a
/// number in a C2 response, and "Add-ins", "Update.exe", "Write-Host".
static DISCOURSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // A question: a question mark at the end (a list number may follow), or a question's
        // opening without one.
        r"(?i)\?\s*(?:\d{1,2}\.?)?\s*$",
        r"|^(?:what|how|why|who)\s+(?:\w+\s+)?(?:is|are|was|were|can|could|do|does|did|should|would|will)\b",
        // A pointer back into the text.
        r"|\b(?:previously|earlier|above|before)[\s-]mentioned\b|\bmentioned (?:above|earlier|previously|before)\b",
        r"|\b(?:described|discussed|explained|outlined) (?:above|earlier)\b",
        r"|\bas (?:mentioned|noted|described|discussed|stated|explained)\b|\bthe following new\b",
        // Details announced.
        r"|^(?:a few |some )?(?:additional|further|more) (?:details?\b|information\s*:)",
        r"|\bnew information\s*:|^(?:one more|another) detail\b",
        // The response and the question together, or the question alone ("in question" is
        // rewritten first, see `is_discourse`).
        r"|\b(?:responses?|answers?)\b.*\b(?:questions?|topics?)\b|\b(?:questions?|topics?)\b.*\b(?:responses?|answers?)\b",
        r"|\bquestions?\b|\b(?:the|this|same|similar) topics?\b|\btips\b",
        r"|^please\b|\bplease (?:provide|list|add|write|include)\b",
        // The document or a report as the thing written.
        r"|\bthe document (?:provides (?:tips|details|information|an overview)|highlights|is designed to provide|adds details|aims to (?:provide|show|explain)|discusses|focuses on|outlines|offers (?:tips|details|insights)|includes a list|gives (?:details|tips|an overview))\b",
        r"|(?:^|:\s*)(?:this|a|a detailed) report (?:on|that|about|includes)\b|\bthis is a report\b|^[\w -]{0,30}\breport:\s",
        // The writer's "we" planning the text.
        r"|\bwe (?:need to|should|are going to|will (?:discuss|look|describe|explain|cover|see))\b|\bwhat (?:can we|we call)\b",
        // An instruction to the writer: a word of these, capitalised, then a space or a
        // comma ("Add-ins", "Update.exe" and "Write-Host" are not).
        r"|(?-i:^(?:Include|Includes the following|Update the (?:document|report|list)|Remember|Please|Share|Make sure|Continue|To continue|Write (?:one|new|more|a (?:new )?(?:sentence|paragraph|list|report|summary)))[ ,:])",
        r"|^it should (?:have|include|contain)\b|\bexamples? (?:can|could|will|would) be (?:provided|given|shown)\b",
        // The text's own section.
        r"|\bin this (?:section|article|chapter|page|challenge|exercise)\b|\bthis (?:challenge|exercise)\b",
    ))
    .expect("valid regex")
});

/// "in question" ("the sample in question"), which [`is_discourse`] reads as "in that".
static IN_QUESTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bin question\b").expect("valid regex"));

/// Whether a sentence is discourse about the writing ([`DISCOURSE`]). `sentence`: trimmed,
/// leading punctuation removed (the pattern anchors some phrases at its start).
fn is_discourse(sentence: &str) -> bool {
    DISCOURSE.is_match(&IN_QUESTION.replace_all(sentence, "in that"))
}

/// Whether a sentence refers to a text ([`TEXT_REFERENCE`]). `sentence`: trimmed, leading
/// punctuation removed (the pattern anchors some phrases at its start).
fn refers_to_a_text(sentence: &str) -> bool {
    TEXT_REFERENCE.captures_iter(sentence).any(|c| {
        let Some(m) = c.name("guarded") else {
            return true;
        };
        let next = sentence[m.end()..]
            .split(|ch: char| !ch.is_alphanumeric())
            .find(|w| !w.is_empty())
            .map(str::to_lowercase);
        !next.is_some_and(|w| TEXT_PLACE_NOT_BEFORE.contains(&w.as_str()))
    })
}

/// Whether `phrase` occurs in `text` as whole words: not preceded or followed by a letter or a
/// digit ("our list" is not in "four listening ports").
fn contains_words(text: &str, phrase: &str) -> bool {
    text.match_indices(phrase).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + phrase.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Whether a sentence is about the task or the list ("Here is a list of 19 more sentences…",
/// "Sure!", "Let's walk through…", "These sentences…", "Another example of…"), or speaks as the
/// model or to its reader ("Your task is to…"), rather than describing an attack.
/// Case-insensitive; typographic apostrophes count as `'`.
pub fn is_meta(sentence: &str) -> bool {
    // The sentence from its first letter or digit: the patterns anchored at its start see
    // "“Another example…" and "- It describes…" as they see "Another example…".
    let body = sentence
        .trim()
        .trim_start_matches(|c: char| !c.is_alphanumeric());
    let t = body.to_lowercase().replace('\u{2019}', "'");
    META_OPENINGS.iter().any(|o| {
        t.strip_prefix(o).is_some_and(|rest| {
            // A whole word or phrase: "sure" opens "Sure!" but not "Surely".
            o.ends_with([',', ':']) || rest.is_empty() || !rest.starts_with(char::is_alphanumeric)
        })
    }) || META_PHRASES.iter().any(|p| contains_words(&t, p))
        || SENTENCE_COUNT.is_match(&t)
        || TASK_WORDS.is_match(&t)
        || in_person(sentence)
        || FRAME.is_match(body)
        || refers_to_a_text(body)
        || is_discourse(body)
}

/// Jinja tags of a template: comments, expressions and statements.
static TEMPLATE_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}").expect("valid regex"));

/// Word n-grams (lower case) of the prompt's own wording: a template's literal text (its Jinja
/// comments, expressions and statements removed, and no n-gram across one of them or a line
/// break), less every n-gram that occurs in one of the `real` sentences. A synthetic sentence
/// that holds one ([`echoes`]) repeats the instruction ("A threat actor or its malware may…"
/// from "…what a threat actor or its malware did…"; "…does not copy them…") rather than
/// describing an attack; no real sentence of the run holds one, by construction. Empty when `n`
/// is 0.
pub fn instruction_ngrams(template: &str, real: &[&str], n: usize) -> HashSet<Vec<String>> {
    if n == 0 {
        return HashSet::new();
    }
    let mut grams: HashSet<Vec<String>> = HashSet::new();
    for part in TEMPLATE_TAG.split(template) {
        for line in part.lines() {
            grams.extend(words(line).windows(n).map(<[String]>::to_vec));
        }
    }
    if grams.is_empty() {
        return grams;
    }
    for r in real {
        for g in words(r).windows(n) {
            grams.remove(g);
        }
    }
    grams
}

/// The first of the prompt's own n-grams ([`instruction_ngrams`]) that `sentence` holds, joined
/// by spaces.
pub fn echoes(sentence: &str, instruction: &HashSet<Vec<String>>) -> Option<String> {
    let n = instruction.iter().next()?.len();
    words(sentence)
        .windows(n)
        .find(|g| instruction.contains(*g))
        .map(|g| g.join(" "))
}

/// The first word n-gram (lower case, `n` ≥ 1 words) that occurs twice in a sentence — a
/// degenerate repetition run such as "… and is different from the way of normal malware and is
/// different from the way of normal malware" — joined by spaces; `None` when every n-gram is
/// distinct, or when `n` is 0.
pub fn repeated_ngram(sentence: &str, n: usize) -> Option<String> {
    if n == 0 {
        return None;
    }
    let w = words(sentence);
    let mut seen: HashSet<&[String]> = HashSet::new();
    w.windows(n).find(|g| !seen.insert(g)).map(|g| g.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sentence is meta ([`is_meta`]).
    fn assert_all_meta(sentences: &[&str]) {
        for s in sentences {
            assert!(is_meta(s), "{s}");
        }
    }

    /// No sentence is meta ([`is_meta`]).
    fn assert_none_meta(sentences: &[&str]) {
        for s in sentences {
            assert!(!is_meta(s), "{s}");
        }
    }

    #[test]
    fn think_blocks_are_removed_whole() {
        let a = "<think>\nOkay, the user wants five sentences.\n1. First I should recall it.\n</think>\n\n1. Real one.\n2. Real two.";
        assert_eq!(strip_reasoning(a), "\n\n1. Real one.\n2. Real two.");
        assert_eq!(strip_reasoning("<THINKING>x\n1. y</THINKING>1. z"), "1. z");
        // Cut off inside the reasoning: nothing is left.
        assert_eq!(
            strip_reasoning("1. Kept.\n<think>\n1. Never closed"),
            "1. Kept.\n"
        );
        // Opened in the prompt: everything before the lone closing tag is reasoning.
        assert_eq!(
            strip_reasoning("1. Reasoning.\n</think>\n1. Answer."),
            "\n1. Answer."
        );
        assert_eq!(strip_reasoning("1. Plain."), "1. Plain.");
    }

    #[test]
    fn literal_technique_ids_and_attack_mentions_are_found() {
        assert_eq!(
            attack_reference(
                "The attacker used a technique called T1012 (Minecraft) to query the registry."
            ),
            Some("T1012")
        );
        assert_eq!(
            attack_reference("This is MITRE ATT&CK technique T1072 in action."),
            Some("MITRE")
        );
        assert_eq!(
            attack_reference("Persistence came from t1547.001 style run keys."),
            Some("t1547.001")
        );
        assert_eq!(
            attack_reference("Mapped to ATT & CK by analysts."),
            Some("ATT & CK")
        );
        assert_eq!(
            attack_reference("Mapped to ATT&amp;CK by analysts."),
            Some("ATT&amp;CK")
        );
        // Not an ID: part of a longer token, or too few digits; "attack" alone is a word.
        assert_eq!(
            attack_reference("The T10 build and host AT1012X were hit."),
            None
        );
        assert_eq!(
            attack_reference("The attack used port 1012 over TCP."),
            None
        );
    }

    #[test]
    fn placeholders_pointers_to_other_list_items_and_an_answer_about_itself_are_meta() {
        // SmolLM2-135M under the shipped settings (stop 24's cold read, replicates 0 and 1).
        assert_all_meta(&[
            "A malware expert revealed [briefly describe what they did to protect their network].",
            "A group of cybersecurity experts have decided to improve [insert name or company here].",
            "A team of cyber security professionals, in a study conducted on [topic] for [type], has found that [specific aspect.",
            "Another part of the list includes a threat actor using a local method to send data into a staging location.",
            "2045: A file-sharing website's new addition to the list of things that can be hidden in Windows.",
            "The answer is no because none were added.",
        ]);
        // Real sentences with square brackets, lists and responses stay.
        assert_none_meta(&[
            "The marker consists of \u{201c}@[request argument]@\u{201d}.",
            "MINIXL redacted GET /****/[redacted].rar 80 209.58.",
            "The response is a Json object with zero or more tasks in it.",
            "The malware adds the file to the list of programs allowed through the firewall.",
            "The backdoor checks the answer from the C2 server before it continues.",
        ]);
    }

    #[test]
    fn meta_sentences_from_the_field_are_found() {
        assert_all_meta(&[
            "Here is a list of 19 more sentences from the threat report that describe the technique.",
            "To better understand these techniques, let's walk through a scenario where an attacker gains access.",
            "Sure!",
            "Sure, here are five sentences describing the technique.",
            "Let's walk through how the attacker moved laterally.",
            "These sentences describe how the malware persists on the host.",
            "Certainly! Below are the requested examples.",
            "I hope these examples help with your classifier.",
            "\u{201c}Here\u{2019}s another one about credential dumping.\u{201d}",
            // SmolLM2 under the list grammar, echoing the prompt's wording.
            "A numbered list of 5 sentences, one per line, is given.",
            "The technique is: Varying the threat actor, the malware hides its files. This is a list of 5 sentences.",
            "A 3-sentence summary of the technique follows.",
            "The technique is: Attack methods.",
            "What the technique is: Adversaries may abuse the Windows service control manager.",
            "The behaviour: adversaries hide files from users.",
            "Write five new sentences about the staging directory.",
            // The same under the prose header (one sentence per item, length penalty).
            "In one of the reports, a cyber threat intelligence analyst identifies how adversaries use Query Registry.",
            "The report details how an adversary has accessed and analyzed registry keys.",
            "This was added to our list so we wouldn't repeat each information found on other sites.",
            "This is another sentence added, but it doesn't have an additional numbered.",
            "If you need more details or additional information, you may refer to the following list: 7.",
            "In an example, while there's a list of 6 examples, you have 7.",
            "The current report covers how adversaries use Group Policy Modification for defense-evasion.",
            "To create one, you will need to choose an appropriate method.",
            "A new example was mentioned that demonstrates how an adversary can capture local data.",
            "In case you want to know more about this attack in detail you need to read further.",
        ]);
        assert!(!is_meta(
            "The malware copied itself into AppData and wrote a registry autostart entry."
        ));
        assert!(!is_meta(
            "Surely enough, the loader returned after every reboot through a Run key."
        ));
        assert!(!is_meta(
            "Operators listed running services with a PowerShell one-liner."
        ));
        // Real sentences near the new words stay.
        assert_none_meta(&[
            "Adversaries may also add their malicious applications to the list of minimal services that start in safe mode.",
            "The report was exfiltrated to a server in the reports folder.",
            "In this campaign the actor sent reports of system information to its C2.",
            // Phrases match as whole words only.
            "The implant opened four listening ports on the host.",
            "The group refined this posture after the takedown.",
            // From the real report sentences the phrases were checked against.
            "We recently mentioned this tool in another report on April 16.",
        ]);
        // Openings real reports use.
        assert!(!is_meta(
            "The following command was executed to dump credentials."
        ));
        assert!(!is_meta("Great Wall themed lures carried the backdoor."));
        // Numbers and lists of other things are fine.
        assert!(!is_meta(
            "The dropper wrote 5 files and a list of 12 domains to the staging folder."
        ));
        assert!(!is_meta(
            "The technique is used by the group to stage archives before exfiltration."
        ));
    }

    #[test]
    fn the_model_speaking_as_itself_or_to_its_reader_is_meta() {
        // SmolLM2-135M under the shipped settings (tram.toml, replicates 0-2).
        assert_all_meta(&[
            "Your task is to submit immediate tasks using the host in the domain through GPOs.",
            "In my report, you mentioned that Group Policy Modification can be used to subvert controls.",
            "I am currently working on a threat intelligence report that discusses Group Policy Modification.",
            "In this response I wanted to describe different methods used by the adversary.",
            "It would be good to ask for an overview or just give me the details.",
            "You can run commands from windows service creation on the target devices.",
            "I\u{2019}ve added the rest below.",
        ]);
        // The price: a real sentence in the second person is flagged too (1.1% of the real ones).
        assert!(is_meta(
            "You can see that the author copy-pasted English typos."
        ));
        assert_none_meta(&[
            "An MFA prompt blocked the team from moving to SBS 2, and Phase I ended before they could implement potential workarounds.",
            "The team queried AD for AD users (during Phase I and II), including for members of a SharePoint group.",
            "We observed the actor staging archives in a recycle bin folder.",
            "The implant reads I/O control codes from the driver.",
        ]);
    }

    #[test]
    fn the_answers_own_frame_is_meta() {
        assert_all_meta(&[
            "Another example of a situation when Rubeus took part in training for DDoS.",
            "As an example of malware: 5 - A virus that can bypass security checks.",
            "2018-10-30: A new threat actor is using Query Registry for discovery, also adding to the list.",
            "The list includes the example from a recent threat report.",
            "6 additional examples where an adversary uses Anti-Virus Software without creating any malware.",
            "This response can be considered as a single response within a larger threat report.",
            "This report focuses on how adversaries use LLMNR/NBT-NS to create a poisoned environment.",
            "The report mentions another example of GPOs used to allow for enhanced control.",
            "Discuss the impact on the target system's security, as mentioned in the threat report.",
            "In the second part of the response, the attacker managed to bypass the server management.",
            "5 other reports about an attacker who used malware to create multiple groups.",
            "This report will provide examples of how attackers can utilize these exploits.",
            "We now have a new list of 8 items such as the server itself.",
        ]);
        assert_none_meta(&[
            "An example of this is use of Rundll32 to load a specifically crafted DLL.",
            "The mount module will use NetUseEnum to identify the current list of locally-mounted network shares and add them to the list to be encrypted.",
            "The response is a Json object that holds the new version number.",
            "Listed below is a Sigma rule that can be used by defenders.",
        ]);
    }

    #[test]
    fn a_reference_to_a_text_is_meta() {
        // SmolLM2-135M, generator seed 100, kept under filter version 10.
        assert_all_meta(&[
            "This is where the report begins.",
            "These are just 3 additional ways to describe how an adversary uses software-defined layers (SDL).",
            "The author has provided a report describing how attacks on the internet and networks can be used.",
            "It adds more details about how this attack was targeted by EternalBlue to the report.",
            "The results have been described in a report on security, which is also discussed within the content.",
            "In this example, a threat actor creates an attack using ICMLuaUtil COM interface.",
            "This report highlights a new method of threat actors using Software Deployment Tools.",
            "The next message should describe what happened during a hack.",
            "The third example refers to malware as it creates one.",
            "from the following answers were asked to report the issue.",
            "It may include other tasks that are not included in the report above, such as saving recording files.",
            "The above information shows that some methods can be used to spread this malware.",
            "It describes how the perpetrator uses different commands when transferring files.",
            "The malware deletes the files, as described by the document.",
        ]);
        // A phrase after a guarded one that does not count is still found.
        assert!(is_meta(
            "The payload was added to the content by the document."
        ));
        assert!(is_meta("\u{201c}It describes how the loader runs."));
        assert!(is_meta(
            "\u{201c}Another example of a loader that hides its window."
        ));
        // Someone else's author or report, and a list the malware checks "in the list", are not.
        assert_none_meta(&[
            "The authors of the malware switch to the 64-bit mode first.",
            "The technique was first described in the report by Kaspersky in 2019.",
            "The group is named in the report published by Mandiant.",
            "If the language is found in the list, the process terminates.",
            "The malware sends the collected content to its C2 server.",
            "The loader decrypts the payload and runs it in memory.",
            "The document contains a macro that downloads the second stage.",
            "It downloads the payload and describes itself as an update.",
        ]);
        // The price: real sentences that point at their own report are matched too (0.55%).
        assert!(is_meta(
            "Also thanks to @svch0st, @pigerlin, and @0xtornado for reviewing this report."
        ));
    }

    #[test]
    fn discourse_about_the_writing_is_meta() {
        // SmolLM2-135M under the shipped settings and two trials, kept by filter version 16 and
        // marked meta in blind reads (stops 25 and 26).
        assert_all_meta(&[
            "What tool was used to bypass UAC in Windows 10? 3.",
            "What can we do about it? We need to ensure that our own protection is made.",
            "What is the nature of this type of malware, that uses Group Policy Modification for defense-evasion.",
            "What can be said about a threat actor who creates groups to control user settings.",
            "As previously mentioned, this malware needs to decrypt those values.",
            "The example mentioned earlier is a typical way that attackers may retrieve credentials.",
            "Using a remote service to gain unauthorized access, as explained on this page.",
            "Includes the following new information: 1) Using a cracked version of PDQ Inventory.",
            "Additional details need to discuss how it was able to reach the target.",
            "One more detail: Some other technologies used to protect an enterprise network.",
            "A few additional details about the Cloud Deployment Management (DEM) and the Azure Arc.",
            "The response has only a single number in it, but we need to add a 3rd digit.",
            "The response ended with the same question asked for more information about each topic.",
            "The document provides tips on encryption methods used to protect documents.",
            "The document is designed to provide a detailed and technical analysis.",
            "A Threat to Credentials In Files: This is a report that goes beyond traditional malware.",
            "Insecurity report: Change to an enumeration of four (4) threats.",
            "In this section, we are going to discuss how to open a TransactionTrans.",
            "Include reference list of new threats against the Equation Editor of Microsoft Office.",
            "Update the document with specific information about using vulnerability analysis.",
            "Remember to remember the message \"first checks to see if the registry already contains.",
            "To continue, please provide a list of 1 new set of questions in the narrative format below.",
            "It should have a number 1.",
            "A similar example can be provided in a different context by examining this behavior.",
            "\u{201c}What is the malware that caused the attack? 4.",
        ]);
        // Real report sentences near the patterns stay: the scheduled task, the sample in
        // question, the C2 server's response and its codes, Adobe Reader, an MQTT topic, a
        // phishing document and its lure, a report the implant sends, an information stealer,
        // "It should be noted", and imperatives that name a file or a cmdlet.
        assert_none_meta(&[
            "The C2 response for the host in question contains the next command.",
            "The C2 server's response contains a four-digit command code.",
            "APT12 has exploited vulnerabilities in Microsoft Office and Adobe Reader.",
            "The malware masquerades as Adobe Acrobat Reader.",
            "The bot subscribes to an MQTT topic to receive commands.",
            "The document is designed to look like an invoice from a shipping company.",
            "When opened, the user is asked to enable macros.",
            "The implant sends a report on the infected host to its C2.",
            "Rhadamanthys is a new information stealer first sold on a forum.",
            "More information is collected from the host via WMI.",
            "It should be noted that the loader checks the keyboard layout.",
            "Add-ins can be used to obtain persistence because they can be set to execute code.",
            "Update.exe was a Go based dropper.",
            "Write-Host was used to print the decoded string.",
            "As soon as they have completed the task, they send it to the infected host via email.",
            "Hence, the analysis showed that the sample in question is a version of the Graphite malware.",
            "The response gets decrypted with the IcedID decryption routine,",
            "When the file is executed, the ThiefQuest code is executed first.",
            "The document contains a macro that downloads the second stage.",
            "Once the victim opens the document, the macro runs.",
            "We observed the actor staging archives in a recycle bin folder.",
            "Use of hidden files that could be used by attackers to avoid detection.",
            "The implant reports the number of drives to its C2 server.",
            "The report was exfiltrated to a server in the reports folder.",
        ]);
        // The price: a blog's own questions and plans are real sentences too (1.0%).
        assert!(is_meta("How do packers work?"));
        assert!(is_meta(
            "In this blog post, we will discuss Unpacking of GuLoader\u{2019}s shellcodes."
        ));
    }

    #[test]
    fn the_prompts_own_wording_echoed_is_found() {
        let template = "{#- A comment: vary the threat actor. -#}\nA threat report describes how adversaries use {{ technique_name }}.\nSay what a threat actor or its malware did, and do not copy them:\n{% for e in examples %}- {{ e }}\n{% endfor %}";
        let real = [
            "The threat actor used its malware to copy files.",
            "We do not copy them.",
        ];
        let grams = instruction_ngrams(template, &real, 3);
        let has = |g: &str| grams.contains(&g.split(' ').map(String::from).collect::<Vec<_>>());
        assert!(has("a threat actor") && has("actor or its") && has("threat report describes"));
        // Not from comments or tags, not across a tag, not in a real sentence.
        assert!(!has("vary the threat") && !has("adversaries use technique_name"));
        assert!(!has("do not copy") && !has("not copy them"));
        assert_eq!(
            echoes("A threat actor or its malware may modify a GPO.", &grams).as_deref(),
            Some("a threat actor")
        );
        assert_eq!(
            echoes("The loader does not copy them to disk.", &grams),
            None
        );
        assert_eq!(echoes("Adversaries modified the GPO.", &grams), None);
        assert!(instruction_ngrams(template, &real, 0).is_empty());
        assert_eq!(echoes("anything", &HashSet::new()), None);
    }

    #[test]
    fn degenerate_repetition_is_found() {
        assert_eq!(
            repeated_ngram(
                "The payload is different from the way of normal malware and is different from the way of normal malware",
                4
            )
            .as_deref(),
            Some("is different from the")
        );
        assert_eq!(
            repeated_ngram("the the the the the", 4).as_deref(),
            Some("the the the the")
        );
        assert_eq!(
            repeated_ngram(
                "The actor used the registry run key and the startup folder to persist.",
                4
            ),
            None
        );
        assert_eq!(repeated_ngram("a b a b", 0), None);
    }
}
