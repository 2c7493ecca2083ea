"""Data-Juicer's text operators and where each stands in sluice: runs under the same name,
runs only with a model file, or is not in sluice. The list is Data-Juicer's operators outside
its image, video and audio ones, at modelscope/data-juicer commit c07c2d793."""

from __future__ import annotations

from .base import OPERATORS, load_builtin_operators

DATA_JUICER_COMMIT = "c07c2d793"
DATA_JUICER_TEXT_OPERATORS = (
    'alphanumeric_filter', 'average_line_length_filter', 'calibrate_qa_mapper',
    'calibrate_query_mapper', 'calibrate_response_mapper', 'character_repetition_filter',
    'chinese_convert_mapper', 'clean_copyright_mapper', 'clean_email_mapper',
    'clean_html_mapper', 'clean_ip_mapper', 'clean_links_mapper',
    'dialog_intent_detection_mapper', 'dialog_sentiment_detection_mapper',
    'dialog_sentiment_intensity_mapper', 'dialog_topic_detection_mapper',
    'document_deduplicator', 'document_minhash_deduplicator', 'document_simhash_deduplicator',
    'download_file_mapper', 'expand_macro_mapper', 'extract_entity_attribute_mapper',
    'extract_entity_relation_mapper', 'extract_event_mapper', 'extract_keyword_mapper',
    'extract_nickname_mapper', 'extract_support_text_mapper', 'extract_tables_from_html_mapper',
    'fix_unicode_mapper', 'flagged_words_filter', 'frequency_specified_field_selector',
    'general_field_filter', 'generate_qa_from_examples_mapper', 'generate_qa_from_text_mapper',
    'in_context_influence_filter', 'instruction_following_difficulty_filter',
    'language_id_score_filter', 'llm_analysis_filter', 'llm_difficulty_score_filter',
    'llm_perplexity_filter', 'llm_quality_score_filter', 'llm_task_relevance_filter',
    'maximum_line_length_filter', 'nlpaug_en_mapper', 'nlpcda_zh_mapper',
    'optimize_prompt_mapper', 'optimize_qa_mapper', 'optimize_query_mapper',
    'optimize_response_mapper', 'pair_preference_mapper', 'perplexity_filter',
    'punctuation_normalization_mapper', 'python_file_mapper', 'python_lambda_mapper',
    'query_intent_detection_mapper', 'query_sentiment_detection_mapper',
    'query_topic_detection_mapper', 'random_selector', 'range_specified_field_selector',
    'ray_basic_deduplicator', 'ray_bts_minhash_deduplicator', 'ray_document_deduplicator',
    'relation_identity_mapper', 'remove_bibliography_mapper', 'remove_comments_mapper',
    'remove_header_mapper', 'remove_long_words_mapper', 'remove_non_chinese_character_mapper',
    'remove_repeat_sentences_mapper', 'remove_specific_chars_mapper',
    'remove_table_text_mapper', 'remove_words_with_incorrect_substrings_mapper',
    'replace_content_mapper', 'sentence_augmentation_mapper', 'sentence_split_mapper',
    'special_characters_filter', 'specified_field_filter', 'specified_numeric_field_filter',
    'stopwords_filter', 'suffix_filter', 'tags_specified_field_selector', 'text_chunk_mapper',
    'text_embd_similarity_filter', 'text_entity_dependency_filter', 'text_length_filter',
    'text_pair_similarity_filter', 'token_num_filter', 'topk_specified_field_selector',
    'whitespace_normalization_mapper', 'word_repetition_filter', 'words_num_filter',
)
# Operators that run only with a model file, and which parameter names it.
NEEDS_MODEL = {"perplexity_filter": "a KenLM model: model_path, or <lang>.arpa.bin in $SLUICE_MODELS"}
# Operators that take a model file when one is there, and run without one.
OPTIONAL_MODEL = {name: "SentencePiece model for tokenization: true (tokenizer_model, or "
                        "<lang>.sp.model in $SLUICE_MODELS); without it sluice splits words"
                  for name in ("alphanumeric_filter", "flagged_words_filter", "stopwords_filter",
                               "word_repetition_filter", "words_num_filter")}


def data_juicer_status() -> dict[str, list[str]]:
    """Data-Juicer's text operators in three groups: 'runs', 'needs a model file', 'missing'."""
    load_builtin_operators()
    groups: dict[str, list[str]] = {"runs": [], "needs a model file": [], "missing": []}
    for name in DATA_JUICER_TEXT_OPERATORS:
        group = "missing" if name not in OPERATORS else "needs a model file" if name in NEEDS_MODEL else "runs"
        groups[group].append(name)
    return groups
