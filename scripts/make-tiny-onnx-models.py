#!/usr/bin/env python3
"""Builds the tiny random-weight ONNX models that test Borde's ONNX engine.

Each model is a REAL Hugging Face architecture (whisper, m2m100, bart, distilbert, bert, resnet,
detr, vit+gpt2) shrunk to a few layers of width 32, with random weights (fixed seeds), exported in
the layout transformers.js loads (a hub repo folder: config.json, tokenizer.json,
preprocessor_config.json, onnx/*.onnx). Their outputs are gibberish; what they prove is that the
engine loads the architecture, runs the pre/post-processing and drives the decoding loop.

Nothing is downloaded: tokenizers are trained here on a small built-in corpus.

Re-run (a few seconds), with the versions the committed fixtures were made with:
    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip install torch==2.13.0 transformers==5.18.0 onnx==1.23.1 onnxscript onnxruntime==1.30.0 tokenizers==0.23.2
    /tmp/venv/bin/python scripts/make-tiny-onnx-models.py test/fixtures/onnx [model ...]
The output is the same byte for byte on every run with those versions (fixed seeds, vocabularies
built in a fixed order); other torch versions may lay the ONNX graphs out differently.

Seq2seq decoders are exported as ONE graph named decoder_model_merged.onnx, the name transformers.js
asks for, that always takes the self-attention cache (`past_key_values.N.decoder.*`, empty on the
first step: transformers.js feeds zero-length tensors when it has none) and recomputes the
cross-attention keys/values from `encoder_hidden_states` at every step. Optimum's merged decoders
instead switch between two graphs with an `If` on `use_cache_branch`; transformers.js handles both,
and the single graph keeps this script short. The script checks every exported graph against
PyTorch, and the decoders step by step with a growing cache, before writing anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

torch.set_num_threads(1)
OPSET = 17
# The tracer warns wherever Python branches on a shape; every graph is checked against PyTorch on
# other shapes than the traced ones below, which is what those warnings ask for.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

# A small bilingual corpus: enough for the tokenizers to learn real sub-words.
CORPUS = """
The quick brown fox jumps over the lazy dog.
Edge inference works offline on small machines.
I love this movie, it was wonderful and moving.
This film was terrible, boring and far too long.
The weather today is sunny with a light breeze.
Please translate this sentence into French.
Summaries should be short and keep the main points.
A dog is running in the park with a red ball.
Two horses are standing in a green field near a fence.
An eagle flies high above the mountains at dawn.
A giraffe eats leaves from a tall tree in the savanna.
Speech recognition turns spoken words into written text.
Go forward ten meters, then turn left at the corner.
Invoice number 4821, total amount due 1234 dollars and 56 cents.
Le renard brun rapide saute par-dessus le chien paresseux.
J'aime beaucoup ce film, il est magnifique.
Il fait beau aujourd'hui et le vent est léger.
Le chien court dans le parc avec une balle rouge.
Der schnelle braune Fuchs springt über den faulen Hund.
El rápido zorro marrón salta sobre el perro perezoso.
numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols , . ! ? ; : ' " ( ) - $ # % & @
""".strip().splitlines()

# The 100 languages of M2M100, in the order of the real tokenizer.
M2M100_LANGUAGES = (
    "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht "
    "hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl "
    "ps pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
).split()

# ImageNet-style labels for the image classifiers (a tiny head needs only a few).
IMAGE_LABELS = ["tabby cat", "golden retriever", "bald eagle", "giraffe", "sorrel horse"]
DETR_LABELS = {0: "N/A", 1: "person", 2: "dog", 3: "horse", 4: "giraffe", 5: "bird"}


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def corpus_words(normalize) -> list[str]:
    """The corpus's words, most frequent first, ties in alphabetical order: a vocabulary built from
    them is the same on every run (the `tokenizers` trainers for WordPiece and Unigram break ties
    in hash order, so their vocabularies change from run to run)."""
    counts: dict[str, int] = {}
    for line in CORPUS:
        for word in re.findall(r"\w+|[^\w\s]", normalize(line)):
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))


def wordpiece_tokenizer() -> Tokenizer:
    """BERT's uncased WordPiece, as bert-base-uncased and bge-small-en ship it: every character
    (alone and as a `##` continuation) so that any corpus word splits, then whole words."""
    # As BertNormalizer does: lowercase, then accents stripped.
    words = corpus_words(lambda line: "".join(c for c in unicodedata.normalize("NFD", line.lower()) if unicodedata.category(c) != "Mn"))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars if c.isalnum()]
    vocab += [w for w in words if len(w) > 1][: 400 - len(vocab)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def bert_tokenizer_config(max_length: int) -> dict:
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": max_length,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "clean_up_tokenization_spaces": True,
    }


def byte_level_bpe(vocab_size: int, special: list[str]) -> Tokenizer:
    """GPT-2's byte-level BPE, the tokenizer family of bart, gpt2 and whisper."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # BPE's trainer breaks ties in a fixed order: its vocabulary is the same on every run.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def bart_tokenizer() -> Tokenizer:
    tok = byte_level_bpe(500, ["<s>", "<pad>", "</s>", "<unk>"])
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    return tok


def m2m100_tokenizer() -> Tokenizer:
    """SentencePiece-style (Metaspace) unigram vocabulary plus `__xx__` language tokens, as M2M100's:
    characters and the corpus's words, the more frequent scored higher."""
    words = corpus_words(lambda line: unicodedata.normalize("NFKC", line))
    chars = sorted({c for w in words for c in w})
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -8.0) for c in chars] + [(f"▁{w}", -4.0 - i / 100) for i, w in enumerate(words)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"] + [f"__{code}__" for code in M2M100_LANGUAGES] + ["<madeupword0>"])
    # The source language token is prepended: transformers.js rewrites it per request (src_lang).
    tok.post_processor = processors.TemplateProcessing(
        single="__en__ $A </s>",
        pair="__en__ $A $B </s>",
        special_tokens=[("__en__", tok.token_to_id("__en__")), ("</s>", tok.token_to_id("</s>"))],
    )
    return tok


def whisper_tokenizer() -> tuple[Tokenizer, dict]:
    """Whisper's layout: byte-level BPE, then <|endoftext|>, <|startoftranscript|>, one token per
    language, task tokens, <|notimestamps|>, then 1501 timestamp tokens <|0.00|>..<|30.00|>."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tok = byte_level_bpe(400, [])
    languages = list(LANGUAGES.keys())[:99]  # whisper v2's 99 languages
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in languages]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    )
    tok.add_special_tokens(specials)
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    ids = {name: tok.token_to_id(name) for name in specials}
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftranscript|> <|notimestamps|> $A <|endoftext|>",
        pair="<|startoftranscript|> <|notimestamps|> $A $B <|endoftext|>",
        special_tokens=[(name, ids[name]) for name in ("<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>")],
    )
    return tok, {"ids": ids, "languages": languages}


def gpt2_tokenizer() -> Tokenizer:
    return byte_level_bpe(400, ["<|endoftext|>"])


# --------------------------------------------------------------------------------------------
# Export and checks
# --------------------------------------------------------------------------------------------


def export(module: torch.nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter restores the wrapper's mode afterwards, recursively: a wrapper left in training
    # mode would switch the model's dropout back on for the checks that follow.
    module.eval()
    names = set(input_names) | set(output_names)
    dynamic_axes = {name: axes for name, axes in dynamic_axes.items() if name in names}
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_close(name: str, got: np.ndarray, want: torch.Tensor) -> None:
    want_np = want.detach().numpy()
    if got.shape != want_np.shape or not np.allclose(got, want_np, atol=1e-4, rtol=1e-3):
        diff = np.abs(got - want_np).max() if got.shape == want_np.shape else "shape"
        raise SystemExit(f"{name}: ONNX output differs from PyTorch ({got.shape} vs {want_np.shape}, max diff {diff})")


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def save_config(model, out: Path) -> None:
    config = model.config.to_dict()
    # Keys the Python library adds for itself; transformers.js ignores them and they churn between versions.
    for key in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "_attn_implementation_autoset"):
        config.pop(key, None)
    config["architectures"] = [type(model).__name__]  # what hub repos carry, and what Borde reads the task from
    write_json(out / "config.json", config)


def save_tokenizer(tok: Tokenizer, out: Path, config: dict) -> None:
    tok.save(str(out / "tokenizer.json"))
    write_json(out / "tokenizer_config.json", config)


def random_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Wider-than-default weights so that tiny random text models give varied (if meaningless) outputs."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    return model.eval()


def never_generate(model, token_ids: list[int]) -> None:
    """Zeroes the output embeddings of special tokens (EOS, language, timestamp tokens): their
    logits become 0 while text tokens' spread far above, so greedy decoding of these random models
    emits text until the length limit — the path the tests check — instead of stopping at once on
    an EOS or emitting only tokens that decode to nothing. (Forced tokens still come out.) Text
    tokens' rows are scaled up so that even whisper's 1501 timestamp tokens together stay less
    likely than the best text token, else its timestamp logits processor forces timestamps."""
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        weight *= 5.0
        weight[token_ids] = 0.0


# --------------------------------------------------------------------------------------------
# Encoder-only models: one graph, onnx/model.onnx
# --------------------------------------------------------------------------------------------


class TextEncoder(torch.nn.Module):
    """Takes named tensors positionally (the ONNX exporter needs positional args)."""

    def __init__(self, model, names: list[str], output: str):
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *tensors):
        return getattr(self.model(**dict(zip(self.names, tensors))), self.output)


def make_bert_embeddings(out: Path) -> None:
    """bge-small-en-like: BertModel, CLS pooling + normalize (sentence-transformers config)."""
    from transformers import BertConfig, BertModel

    tok = wordpiece_tokenizer()
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        attn_implementation="eager",
    )
    torch.manual_seed(1)
    model = random_init(BertModel(config, add_pooling_layer=False), 1)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    wrapper = TextEncoder(model, names, "last_hidden_state")
    enc = tok.encode_batch(["hello world", "the quick brown fox jumps"])
    width = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
    args = (ids, mask, torch.zeros_like(ids))
    path = out / "onnx" / "model.onnx"
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["last_hidden_state"] = {0: "batch_size", 1: "sequence_length"}
    export(wrapper, args, path, names, ["last_hidden_state"], axes)
    got = session(path).run(None, {n: t.numpy() for n, t in zip(names, args)})[0]
    assert_close("bert", got, wrapper(*args))

    save_config(model, out)
    save_tokenizer(tok, out, bert_tokenizer_config(128))
    write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": 32,
            "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            indent=2,
        )
        + "\n"
    )


def make_distilbert_sst2(out: Path) -> None:
    """distilbert-base-uncased-finetuned-sst-2-english-like: 2 labels, NEGATIVE/POSITIVE.
    Also ships a dynamically quantized copy (model_quantized.onnx), as hub repos do."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tok = wordpiece_tokenizer()
    config = DistilBertConfig(
        vocab_size=tok.get_vocab_size(),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=0,
        attn_implementation="eager",
    )
    torch.manual_seed(2)
    model = random_init(DistilBertForSequenceClassification(config), 2)
    names = ["input_ids", "attention_mask"]
    wrapper = TextEncoder(model, names, "logits")
    enc = tok.encode_batch(["i love this movie", "this film was terrible and far too long"])
    width = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
    path = out / "onnx" / "model.onnx"
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    export(wrapper, (ids, mask), path, names, ["logits"], axes)
    got = session(path).run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    assert_close("distilbert", got, wrapper(ids, mask))
    quantize_dynamic(str(path), str(out / "onnx" / "model_quantized.onnx"), weight_type=QuantType.QUInt8)

    save_config(model, out)
    save_tokenizer(tok, out, {**bert_tokenizer_config(128), "tokenizer_class": "DistilBertTokenizer"})


def make_resnet(out: Path) -> None:
    """microsoft/resnet-50-like: ResNetForImageClassification with resnet-50's preprocessing."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=len(IMAGE_LABELS),
        id2label=dict(enumerate(IMAGE_LABELS)),
        label2id={label: i for i, label in enumerate(IMAGE_LABELS)},
    )
    torch.manual_seed(3)
    model = ResNetForImageClassification(config).eval()
    wrapper = TextEncoder(model, ["pixel_values"], "logits")
    pixels = torch.randn(2, 3, 224, 224)
    path = out / "onnx" / "model.onnx"
    export(wrapper, (pixels,), path, ["pixel_values"], ["logits"], {"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}})
    assert_close("resnet", session(path).run(None, {"pixel_values": pixels.numpy()})[0], wrapper(pixels))

    save_config(model, out)
    write_json(
        out / "preprocessor_config.json",
        {
            "crop_pct": 0.875,
            "do_normalize": True,
            "do_resize": True,
            "image_processor_type": "ConvNextImageProcessor",
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
            "resample": 3,
            "size": {"shortest_edge": 224},
        },
    )


class DetrWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, pixel_mask):
        out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return out.logits, out.pred_boxes


def make_detr(out: Path) -> None:
    """facebook/detr-resnet-50-like: DETR over a (tiny) HF ResNet backbone, no timm."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"])
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        id2label=DETR_LABELS,
        label2id={v: k for k, v in DETR_LABELS.items()},
    )
    torch.manual_seed(4)
    model = DetrForObjectDetection(config).eval()
    wrapper = DetrWrapper(model)
    pixels = torch.randn(1, 3, 96, 128)
    mask = torch.ones(1, 96, 128, dtype=torch.int64)
    path = out / "onnx" / "model.onnx"
    axes = {
        "pixel_values": {0: "batch_size", 2: "height", 3: "width"},
        "pixel_mask": {0: "batch_size", 1: "height", 2: "width"},
        "logits": {0: "batch_size"},
        "pred_boxes": {0: "batch_size"},
    }
    export(wrapper, (pixels, mask), path, ["pixel_values", "pixel_mask"], ["logits", "pred_boxes"], axes)
    # Another image size than the traced one: DETR's sizes must stay dynamic.
    pixels2 = torch.randn(1, 3, 128, 80)
    mask2 = torch.ones(1, 128, 80, dtype=torch.int64)
    got = session(path).run(None, {"pixel_values": pixels2.numpy(), "pixel_mask": mask2.numpy()})
    want = wrapper(pixels2, mask2)
    assert_close("detr logits", got[0], want[0])
    assert_close("detr boxes", got[1], want[1])

    save_config(model, out)
    write_json(
        out / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "format": "coco_detection",
            "image_processor_type": "DetrImageProcessor",
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
            "resample": 2,
            "rescale_factor": 1 / 255,
            "size": {"shortest_edge": 128, "longest_edge": 200},
        },
    )


# --------------------------------------------------------------------------------------------
# Encoder-decoder models: onnx/encoder_model.onnx + onnx/decoder_model_merged.onnx
# --------------------------------------------------------------------------------------------


class Seq2SeqEncoder(torch.nn.Module):
    def __init__(self, encoder, names: list[str]):
        super().__init__()
        self.encoder, self.names = encoder, names

    def forward(self, *tensors):
        return self.encoder(**dict(zip(self.names, tensors))).last_hidden_state


class Seq2SeqDecoder(torch.nn.Module):
    """One decoder step for transformers.js: (input_ids, encoder_hidden_states[, encoder_attention_mask],
    past self-attention keys/values per layer) -> logits, present keys/values (self and cross)
    [, cross-attention weights for whisper's word timestamps]."""

    def __init__(self, model, layers: int, encoder_mask: bool, cross_attentions: bool):
        super().__init__()
        self.model, self.layers, self.encoder_mask, self.cross_attentions = model, layers, encoder_mask, cross_attentions

    def forward(self, input_ids, encoder_hidden_states, *rest):
        from transformers import DynamicCache, EncoderDecoderCache

        mask = rest[0] if self.encoder_mask else None
        past = rest[1:] if self.encoder_mask else rest
        self_cache = DynamicCache()
        for i in range(self.layers):
            self_cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            encoder_outputs=(encoder_hidden_states,),
            attention_mask=mask,
            decoder_input_ids=input_ids,
            past_key_values=EncoderDecoderCache(self_cache, DynamicCache()),
            use_cache=True,
            output_attentions=self.cross_attentions,
            return_dict=True,
        )
        results = [out.logits]
        cache = out.past_key_values
        for i in range(self.layers):
            results += [cache.self_attention_cache.layers[i].keys, cache.self_attention_cache.layers[i].values]
            results += [cache.cross_attention_cache.layers[i].keys, cache.cross_attention_cache.layers[i].values]
        if self.cross_attentions:
            results += list(out.cross_attentions)
        return tuple(results)


def export_seq2seq(model, out: Path, encoder_inputs: dict[str, torch.Tensor], decoder_start: list[int], cross_attentions=False) -> None:
    """Exports encoder + decoder and checks ONNX greedy decoding against PyTorch's, cache and all."""
    config = model.config
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    head_dim = config.d_model // heads
    is_text = "input_ids" in encoder_inputs

    enc_names = list(encoder_inputs)
    encoder = Seq2SeqEncoder(model.get_encoder(), enc_names)
    enc_args = tuple(encoder_inputs.values())
    enc_path = out / "onnx" / "encoder_model.onnx"
    enc_axes = {n: ({0: "batch_size", 1: "encoder_sequence_length"} if is_text else {0: "batch_size"}) for n in enc_names}
    enc_axes["last_hidden_state"] = {0: "batch_size", 1: "encoder_sequence_length"}
    export(encoder, enc_args, enc_path, enc_names, ["last_hidden_state"], enc_axes)
    hidden = encoder(*enc_args)
    enc_session = session(enc_path)
    assert_close("encoder", enc_session.run(None, {n: t.numpy() for n, t in encoder_inputs.items()})[0], hidden)

    decoder = Seq2SeqDecoder(model, layers, is_text, cross_attentions)
    batch = hidden.shape[0]
    dec_names = ["input_ids", "encoder_hidden_states"] + (["encoder_attention_mask"] if is_text else [])
    past_names, present_names = [], []
    for i in range(layers):
        past_names += [f"past_key_values.{i}.decoder.key", f"past_key_values.{i}.decoder.value"]
        present_names += [f"present.{i}.decoder.key", f"present.{i}.decoder.value", f"present.{i}.encoder.key", f"present.{i}.encoder.value"]
    out_names = ["logits"] + present_names + ([f"cross_attentions.{i}" for i in range(layers)] if cross_attentions else [])
    axes = {
        "input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
        "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
        "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
        "logits": {0: "batch_size", 1: "decoder_sequence_length"},
    }
    for name in past_names:
        axes[name] = {0: "batch_size", 2: "past_decoder_sequence_length"}
    for name in present_names:
        axes[name] = {0: "batch_size", 2: "encoder_sequence_length" if ".encoder." in name else "past_decoder_sequence_length + 1"}
    for i in range(layers):
        axes[f"cross_attentions.{i}"] = {0: "batch_size", 2: "decoder_sequence_length", 3: "encoder_sequence_length"}

    # Traced with a non-empty cache and two new tokens so every length stays symbolic.
    trace_past = [torch.randn(batch, heads, 3, head_dim) for _ in past_names]
    trace_ids = torch.tensor([decoder_start[:1] * 2] * batch)
    trace_args = (trace_ids, hidden) + ((encoder_inputs["attention_mask"],) if is_text else ()) + tuple(trace_past)
    dec_path = out / "onnx" / "decoder_model_merged.onnx"
    export(decoder, trace_args, dec_path, dec_names + past_names, out_names, axes)

    # Greedy decoding, PyTorch vs ONNX, the way transformers.js drives it: empty cache first.
    dec_session = session(dec_path)
    ids = torch.tensor([decoder_start] * batch)
    past = [torch.zeros(batch, heads, 0, head_dim) for _ in past_names]
    fixed = {"encoder_hidden_states": hidden} | ({"encoder_attention_mask": encoder_inputs["attention_mask"]} if is_text else {})
    for step in range(6):
        args = (ids, hidden) + ((encoder_inputs["attention_mask"],) if is_text else ()) + tuple(past)
        want = decoder(*args)
        feed = {"input_ids": ids.numpy()} | {k: v.numpy() for k, v in fixed.items()} | {n: t.numpy() for n, t in zip(past_names, past)}
        got = dec_session.run(None, feed)
        for name, g, w in zip(out_names, got, want):
            assert_close(f"decoder step {step} {name}", g, w)
        past = [w for name, w in zip(out_names, want) if ".decoder." in name]
        ids = want[0][:, -1:].argmax(-1)


def make_bart(out: Path) -> None:
    """facebook/bart-large-cnn-like summarizer."""
    from transformers import BartConfig, BartForConditionalGeneration

    tok = bart_tokenizer()
    config = BartConfig(
        vocab_size=tok.get_vocab_size(),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        attn_implementation="eager",
    )
    torch.manual_seed(5)
    model = random_init(BartForConditionalGeneration(config), 5)
    never_generate(model, [0, 1, 2, 3, tok.token_to_id("<mask>")])
    enc = tok.encode_batch(["The weather today is sunny.", "A dog is running in the park with a red ball."])
    width = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [1] * (width - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
    export_seq2seq(model, out, {"input_ids": ids, "attention_mask": mask}, [2])

    save_config(model, out)
    write_json(
        out / "generation_config.json",
        {"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": 0, "forced_eos_token_id": 2, "pad_token_id": 1, "max_length": 128},
    )
    save_tokenizer(
        tok,
        out,
        {
            "tokenizer_class": "BartTokenizer",
            "model_max_length": 128,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "cls_token": "<s>",
            "sep_token": "</s>",
            "add_prefix_space": False,
        },
    )


def make_m2m100(out: Path) -> None:
    """facebook/m2m100_418M-like translator (Workers AI's @cf/meta/m2m100-1.2b family)."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    tok = m2m100_tokenizer()
    pad, eos = tok.token_to_id("<pad>"), tok.token_to_id("</s>")
    config = M2M100Config(
        vocab_size=tok.get_vocab_size(),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=tok.token_to_id("<s>"),
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=eos,
        scale_embedding=True,
        attn_implementation="eager",
    )
    torch.manual_seed(6)
    model = random_init(M2M100ForConditionalGeneration(config), 6)
    never_generate(model, [tok.token_to_id(t) for t in ["<s>", "<pad>", "</s>", "<unk>", "<madeupword0>"]] + [tok.token_to_id(f"__{c}__") for c in M2M100_LANGUAGES])
    enc = tok.encode_batch(["The weather today is sunny.", "Please translate this sentence into French."])
    width = max(len(e.ids) for e in enc)
    ids = torch.tensor([e.ids + [pad] * (width - len(e.ids)) for e in enc])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in enc])
    export_seq2seq(model, out, {"input_ids": ids, "attention_mask": mask}, [eos, tok.token_to_id("__fr__")])

    save_config(model, out)
    write_json(
        out / "generation_config.json",
        {"bos_token_id": config.bos_token_id, "decoder_start_token_id": eos, "eos_token_id": eos, "pad_token_id": pad, "max_length": 128},
    )
    save_tokenizer(
        tok,
        out,
        {
            "tokenizer_class": "M2M100Tokenizer",
            "model_max_length": 128,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "sep_token": "</s>",
            "src_lang": "en",
            "tgt_lang": "fr",
            "additional_special_tokens": [f"__{code}__" for code in M2M100_LANGUAGES],
        },
    )


def make_whisper(out: Path) -> None:
    """openai/whisper-tiny-like: real 80-mel feature extractor and 30 s window, multilingual
    special tokens, alignment heads for word timestamps, 64 target positions."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tok, info = whisper_tokenizer()
    ids = info["ids"]
    eot, sot, notimestamps = ids["<|endoftext|>"], ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        attn_implementation="eager",
    )
    torch.manual_seed(7)
    model = random_init(WhisperForConditionalGeneration(config), 7)
    never_generate(model, list(range(eot, tok.get_vocab_size())))  # specials and timestamps
    features = torch.randn(1, 80, 3000)
    start = [sot, ids["<|en|>"], ids["<|transcribe|>"], notimestamps]
    export_seq2seq(model, out, {"input_features": features}, start, cross_attentions=True)

    save_config(model, out)
    space = tok.token_to_id("Ġ")
    write_json(
        out / "generation_config.json",
        {
            "alignment_heads": [[1, 0], [1, 1]],
            "begin_suppress_tokens": [space, eot] if space is not None else [eot],
            "bos_token_id": eot,
            "decoder_start_token_id": sot,
            "eos_token_id": eot,
            "pad_token_id": eot,
            "is_multilingual": True,
            "lang_to_id": {f"<|{code}|>": ids[f"<|{code}|>"] for code in info["languages"]},
            "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
            "max_initial_timestamp_index": 50,
            "max_length": 64,
            "no_timestamps_token_id": notimestamps,
            "prev_sot_token_id": ids["<|startofprev|>"],
            "return_timestamps": False,
            "suppress_tokens": [],
        },
    )
    extractor = WhisperFeatureExtractor(feature_size=80).to_dict()
    extractor.pop("mel_filters", None)  # transformers.js computes the same filter bank itself
    extractor["processor_class"] = "WhisperProcessor"
    write_json(out / "preprocessor_config.json", extractor)
    save_tokenizer(
        tok,
        out,
        {
            "tokenizer_class": "WhisperTokenizer",
            "model_max_length": 64,
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "add_prefix_space": False,
            "errors": "replace",
        },
    )


# --------------------------------------------------------------------------------------------
# Vision encoder + text decoder (image-to-text): ViT + GPT-2, as nlpconnect/vit-gpt2-image-captioning
# --------------------------------------------------------------------------------------------


class Gpt2CaptionDecoder(torch.nn.Module):
    """(input_ids, encoder_hidden_states, past_key_values.N.key/value) -> logits, present.N.key/value."""

    def __init__(self, decoder, layers: int):
        super().__init__()
        self.decoder, self.layers = decoder, layers

    def forward(self, input_ids, encoder_hidden_states, *past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, past_key_values=cache, use_cache=True, return_dict=True)
        results = [out.logits]
        cache = out.past_key_values
        cache = getattr(cache, "self_attention_cache", cache)
        for i in range(self.layers):
            results += [cache.layers[i].keys, cache.layers[i].values]
        return tuple(results)


def make_vit_gpt2(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel, VisionEncoderDecoderConfig

    tok = gpt2_tokenizer()
    eos = tok.token_to_id("<|endoftext|>")
    vit_config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    gpt_config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=eos,
        eos_token_id=eos,
        attn_implementation="eager",
    )
    torch.manual_seed(8)
    encoder = random_init(ViTModel(vit_config, add_pooling_layer=False), 8)
    decoder = random_init(GPT2LMHeadModel(gpt_config), 9)
    never_generate(decoder, [eos])
    pixels = torch.randn(1, 3, 32, 32)

    enc_path = out / "onnx" / "encoder_model.onnx"
    enc = TextEncoder(encoder, ["pixel_values"], "last_hidden_state")
    export(enc, (pixels,), enc_path, ["pixel_values"], ["last_hidden_state"], {"pixel_values": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}})
    hidden = enc(pixels)
    assert_close("vit", session(enc_path).run(None, {"pixel_values": pixels.numpy()})[0], hidden)

    wrapper = Gpt2CaptionDecoder(decoder, 2)
    past_names = [f"past_key_values.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    axes |= {n: {0: "batch_size", 2: "past_sequence_length"} for n in past_names}
    axes |= {n: {0: "batch_size", 2: "past_sequence_length + 1"} for n in present_names}
    dec_path = out / "onnx" / "decoder_model_merged.onnx"
    trace_args = (torch.tensor([[eos, eos]]), hidden) + tuple(torch.randn(1, 2, 3, 16) for _ in past_names)
    export(wrapper, trace_args, dec_path, ["input_ids", "encoder_hidden_states"] + past_names, ["logits"] + present_names, axes)
    dec_session = session(dec_path)
    ids, past = torch.tensor([[eos]]), [torch.zeros(1, 2, 0, 16) for _ in past_names]
    for step in range(6):
        want = wrapper(ids, hidden, *past)
        got = dec_session.run(None, {"input_ids": ids.numpy(), "encoder_hidden_states": hidden.detach().numpy()} | {n: t.numpy() for n, t in zip(past_names, past)})
        for name, g, w in zip(["logits"] + present_names, got, want):
            assert_close(f"gpt2 step {step} {name}", g, w)
        past, ids = list(want[1:]), want[0][:, -1:].argmax(-1)

    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit_config, gpt_config)
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    config_dict = config.to_dict()
    config_dict["architectures"] = ["VisionEncoderDecoderModel"]
    for key in ("transformers_version", "_name_or_path", "torch_dtype", "dtype"):
        config_dict.pop(key, None)
        config_dict["encoder"].pop(key, None)
        config_dict["decoder"].pop(key, None)
    write_json(out / "config.json", config_dict)
    write_json(out / "generation_config.json", {"bos_token_id": eos, "decoder_start_token_id": eos, "eos_token_id": eos, "pad_token_id": eos, "max_length": 24})
    write_json(
        out / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_resize": True,
            "image_processor_type": "ViTImageProcessor",
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "resample": 2,
            "size": {"height": 32, "width": 32},
        },
    )
    save_tokenizer(
        tok,
        out,
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 64, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "add_prefix_space": False},
    )


MODELS = {
    "bert-embeddings": make_bert_embeddings,
    "distilbert-sst2": make_distilbert_sst2,
    "resnet": make_resnet,
    "detr": make_detr,
    "bart-summarization": make_bart,
    "m2m100-translation": make_m2m100,
    "whisper": make_whisper,
    "vit-gpt2-captioning": make_vit_gpt2,
}


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR [model ...]   (models: {', '.join(MODELS)})")
    root = Path(sys.argv[1])
    names = sys.argv[2:] or list(MODELS)
    for name in names:
        # Built in a scratch folder and moved into place only once every check passed.
        with tempfile.TemporaryDirectory() as tmp:
            build = Path(tmp) / name
            with torch.no_grad():
                MODELS[name](build)
            target = root / name
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(build, target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        print(f"{name}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
