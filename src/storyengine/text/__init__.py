"""Text in any language: one tokenizer and sentence splitter (segment), language detection
(language), one loop detector (loops), the rules about text with their repairs (rules), and
the review that applies them to a model's answer (review)."""
