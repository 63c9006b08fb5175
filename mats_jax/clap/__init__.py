"""The frozen CLAP encoder (msclap 2023 and LAION-CLAP) and everything that feeds it.

model.py            CLAP: audio and text towers, projections, jitted embed functions
htsat.py            the Swin (HTSAT) audio core both families share
roberta.py          LAION-CLAP's text tower
msclap_features.py  msclap's log-mel front end (inside the model)
laion_features.py   LAION-CLAP's feature extractor (fusion, truncation, padding)
caption_tokens.py   msclap's GPT-2 and LAION's RoBERTa tokenisation, offline
audio.py            audio files -> clips, as msclap loads them
text_cache.py       the corpus's CLAP text embeddings, computed once
load.py             a CLAP from a checkpoint folder, or random weights said loudly
"""
