"""genesis_data: Bible text in, training batches out.

canon      canonical book ids and verse keys
readers/   one module per file format, and the OpenBible cross references
corpus     Translation, Corpus (built-in pythonbible texts, a folder of files, running text)
tokenizer  byte-level BPE or characters, atomic "Jehovah", one tokenizer.json
blocks     tokenize-once memmap cache, chapter-level validation split, LM blocks
sampler    MultiTaskSampler: lm, coherence, xref and paraphrase batches
cli        genesis-data stats | train-tokenizer | prepare | sample
"""
