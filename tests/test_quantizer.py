"""nest_ext's RandomProjectionVectorQuantizer against NeMo's: same state dict, bit-identical tokens and vectors."""
import pytest
import torch
import torch.nn.functional as F
from nemo.collections.asr.modules import RandomProjectionVectorQuantizer as NeMoQuantizer

from nest_ext.modules.random_projection_quantizer import RandomProjectionVectorQuantizer


def _pair(**kwargs):
    torch.manual_seed(0)
    nemo = NeMoQuantizer(**kwargs)
    ours = RandomProjectionVectorQuantizer(**kwargs)
    ours.load_state_dict(nemo.state_dict(), strict=True)
    return nemo, ours


def _assert_same(nemo, ours, x):
    with torch.no_grad():
        xq_n, ids_n = nemo(input_signal=x)
        xq_o, ids_o = ours(input_signal=x)
    assert ids_o.dtype == ids_n.dtype and torch.equal(ids_o, ids_n)
    assert xq_o.dtype == xq_n.dtype and torch.equal(xq_o, xq_n)
    return ids_n


@pytest.mark.parametrize("kwargs", [
    dict(num_classes=8192, num_books=1, combine_time_steps=8),               # NEST's config
    dict(num_classes=256, num_books=2, combine_time_steps=8),
    dict(num_classes=256, num_books=1, combine_time_steps=8, squeeze_single=True),
    dict(num_classes=64, num_books=3, combine_time_steps=1, time_ahead=True),
])
def test_tokens_and_vectors_equal_nemos(kwargs):
    nemo, ours = _pair(feat_in=80, code_dim=16, dist_fn="l2", **kwargs)
    assert ours.state_dict().keys() == nemo.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 80, 256, generator=g)  # [B, D, T] log-mel-like features
    if kwargs.get("time_ahead"):
        x = x.transpose(1, 2)
    ids = _assert_same(nemo, ours, x)
    assert ids.unique().numel() > 10  # a real spread of codes, not one answer everywhere


def test_chunked_search_and_ties_are_nemos():
    """Duplicate codes make exact ties (NeMo keeps the first index); tiny chunks cross chunk borders."""
    nemo, ours = _pair(feat_in=16, code_dim=16, num_classes=512, num_books=1, dist_fn="l2")
    with torch.no_grad():
        eye = torch.eye(16)
        nemo.proj.weight.copy_(eye)
        ours.proj.weight.copy_(eye)
        cb = nemo.codebooks.clone()
        cb[0, 300:] = cb[0, :212]  # codes 300.. duplicate codes 0..211
        nemo.codebooks.copy_(cb)
        ours.codebooks.copy_(cb)
    # frames sitting exactly on duplicated codes (distance 0 to two codes), plus random ones
    on_codes = cb[0, 300:340].float().T.unsqueeze(0)  # [1, 16, 40]
    x = torch.cat([on_codes, torch.randn(1, 16, 60)], dim=-1)
    ours.score_budget = 512 * 7  # 7 frames per chunk
    ids = _assert_same(nemo, ours, x)
    assert (ids[0, :40, 0] < 212).all()  # the first of each tied pair


def test_autocast_keeps_nemos_tokens():
    nemo, ours = _pair(feat_in=80, code_dim=16, num_classes=1024, num_books=1, dist_fn="l2", combine_time_steps=8)
    x = torch.randn(2, 80, 128, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _assert_same(nemo, ours, x)


def test_cosine_is_nemos_path():
    nemo, ours = _pair(feat_in=80, code_dim=16, num_classes=128, num_books=1, dist_fn="cosine", combine_time_steps=8)
    x = torch.randn(2, 80, 64)
    with torch.no_grad():
        try:
            expected = nemo(input_signal=x)
        except RuntimeError as e:  # NeMo 3.0's einsum of float32 features and float64 codebooks
            with pytest.raises(RuntimeError, match=str(e)[:40]):
                ours(input_signal=x)
            return
        got = ours(input_signal=x)
    assert torch.equal(got[1], expected[1])


def test_many_frames_against_nemo():
    """5000 frames against NEST's 8192-code book (NeMo in slices of 250 frames to bound its memory)."""
    nemo, ours = _pair(feat_in=16, code_dim=16, num_classes=8192, num_books=1, dist_fn="l2")
    with torch.no_grad():
        nemo.proj.weight.copy_(torch.eye(16))
        ours.proj.weight.copy_(torch.eye(16))
        x = torch.randn(1, 16, 5_000, generator=torch.Generator().manual_seed(3))
        expected = torch.cat([nemo(input_signal=x[:, :, i:i + 250])[1] for i in range(0, x.shape[-1], 250)], dim=1)
        got = ours(input_signal=x)[1]
    assert torch.equal(got, expected)
