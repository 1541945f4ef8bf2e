"""A post-norm, ReLU, sinusoidal encoder-decoder equals torch.nn.Transformer with copied
weights (the model of the original paper)."""

import torch
from torch import nn

from attnlab import ModelConfig, build_model
from attnlab.nn.masks import causal_mask


def _copy_block(ours, ref_layer, cross: bool) -> None:
    ours.self_attn.in_proj.weight.copy_(ref_layer.self_attn.in_proj_weight)
    ours.self_attn.in_proj.bias.copy_(ref_layer.self_attn.in_proj_bias)
    ours.self_attn.out_proj.load_state_dict(ref_layer.self_attn.out_proj.state_dict())
    ours.feed_forward.fc_in.load_state_dict(ref_layer.linear1.state_dict())
    ours.feed_forward.fc_out.load_state_dict(ref_layer.linear2.state_dict())
    ours.norm_attn.load_state_dict(ref_layer.norm1.state_dict())
    if cross:
        ours.cross_attn.in_proj.weight.copy_(ref_layer.multihead_attn.in_proj_weight)
        ours.cross_attn.in_proj.bias.copy_(ref_layer.multihead_attn.in_proj_bias)
        ours.cross_attn.out_proj.load_state_dict(ref_layer.multihead_attn.out_proj.state_dict())
        ours.norm_cross.load_state_dict(ref_layer.norm2.state_dict())
        ours.norm_ff.load_state_dict(ref_layer.norm3.state_dict())
    else:
        ours.norm_ff.load_state_dict(ref_layer.norm2.state_dict())


def test_matches_torch_nn_transformer() -> None:
    d, heads, layers = 32, 4, 2
    config = ModelConfig(
        family="encoder_decoder",
        vocab_size=50,
        target_vocab_size=60,
        d_model=d,
        n_heads=heads,
        d_ff=64,
        n_layers=layers,
        n_decoder_layers=layers,
        max_seq_len=32,
        positional="sinusoidal",
        norm="layernorm",
        norm_placement="post",
        final_norm=True,  # nn.Transformer normalises both stacks' outputs
        activation="relu",
        scale_embeddings=True,
    )
    model = build_model(config).eval()
    ref = nn.Transformer(
        d_model=d,
        nhead=heads,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dim_feedforward=64,
        dropout=0.0,
        activation="relu",
        batch_first=True,
    ).eval()
    with torch.no_grad():
        for param in ref.parameters():  # make biases and norms non-trivial
            param.add_(torch.randn_like(param) * 0.05)
        for ours, theirs in zip(model.encoder.blocks, ref.encoder.layers, strict=True):
            _copy_block(ours, theirs, cross=False)
        for ours, theirs in zip(model.decoder.blocks, ref.decoder.layers, strict=True):
            _copy_block(ours, theirs, cross=True)
        model.encoder.final_norm.load_state_dict(ref.encoder.norm.state_dict())
        model.decoder.final_norm.load_state_dict(ref.decoder.norm.state_dict())

    src = torch.randint(1, 50, (3, 9))
    tgt = torch.randint(1, 60, (3, 7))
    src_mask = torch.ones(3, 9, dtype=torch.long)
    src_mask[0, 6:] = 0
    tgt_mask = torch.ones(3, 7, dtype=torch.long)
    tgt_mask[2, 5:] = 0
    pos_src = torch.arange(9).expand(3, 9)
    pos_tgt = torch.arange(7).expand(3, 7)
    src_emb = model.encoder.embeddings(src, pos_src)
    tgt_emb = model.decoder.embeddings(tgt, pos_tgt)
    expected_hidden = ref(
        src_emb,
        tgt_emb,
        tgt_mask=~causal_mask(7),  # torch: True = blocked
        src_key_padding_mask=src_mask == 0,
        tgt_key_padding_mask=tgt_mask == 0,
        memory_key_padding_mask=src_mask == 0,
    )
    expected = model.lm_head(expected_hidden)
    out = model(src, tgt, source_mask=src_mask, target_mask=tgt_mask)
    real = tgt_mask.bool()
    torch.testing.assert_close(out.logits[real], expected[real], atol=1e-5, rtol=0)
