"""MLMLoss / MultiMLMLoss: equal to NeMo's on the same inputs; 0 (not NaN) without masked frames."""
import pytest
import torch

from nemo.collections.asr.losses import MLMLoss as NeMoMLMLoss
from nemo.collections.asr.losses import MultiMLMLoss as NeMoMultiMLMLoss
from nest_ext.losses import MLMLoss, MultiMLMLoss

STEPS = 8


def _inputs(num_books, squeeze, batch=3, frames=12, classes=20, feats=16, seed=0, mask_prob=0.3):
    g = torch.Generator().manual_seed(seed)
    # block masks over groups of STEPS frames, plus a partly masked group (tests mask_threshold)
    group = torch.rand(batch, frames, generator=g) < mask_prob
    masks = group.repeat_interleave(STEPS, dim=1)[:, None, :].expand(batch, feats, -1).float().clone()
    masks[0, :, :3] = 1.0  # group 0 of item 0: partly masked
    masks[0, :, 3:STEPS] = 0.0
    shape = (batch, frames, classes) if (squeeze and num_books == 1) else (batch, frames, classes, num_books)
    logits = torch.randn(shape, generator=g)
    log_probs = logits.log_softmax(2).requires_grad_(True)
    tshape = shape[:2] if len(shape) == 3 else (batch, frames, num_books)
    targets = torch.randint(0, classes, tshape, generator=g)
    lengths = torch.full((batch,), frames)
    return masks, log_probs, targets, lengths


@pytest.mark.parametrize("num_books,squeeze", [(1, False), (1, True), (3, False), (3, True)])
@pytest.mark.parametrize("threshold", [0.8, 0.2])
def test_multi_mlm_loss_equals_nemo(num_books, squeeze, threshold):
    kw = dict(combine_time_steps=STEPS, mask_threshold=threshold, num_decoders=num_books, squeeze_single=squeeze)
    ours, nemo = MultiMLMLoss(**kw), NeMoMultiMLMLoss(**kw)
    masks, log_probs, targets, lengths = _inputs(num_books, squeeze)
    a = ours(masks=masks, decoder_outputs=log_probs, targets=targets, decoder_lengths=lengths)
    (ga,) = torch.autograd.grad(a, log_probs)
    b = nemo(masks=masks, decoder_outputs=log_probs, targets=targets, decoder_lengths=lengths)
    (gb,) = torch.autograd.grad(b, log_probs)
    assert torch.isfinite(b) and b > 0
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-6)


def test_mlm_loss_equals_nemo_with_short_targets():
    """Targets shorter than the masks are padded with class 0 in both."""
    masks, log_probs, targets, _ = _inputs(1, True, mask_prob=0.9)
    a = MLMLoss(STEPS, 0.8)(masks=masks, decoder_outputs=log_probs, targets=targets[:, :-2])
    b = NeMoMLMLoss(STEPS, 0.8)(masks=masks, decoder_outputs=log_probs, targets=targets[:, :-2])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("num_books,squeeze", [(1, True), (1, False), (2, False)])
def test_no_masked_frame_gives_zero_not_nan(num_books, squeeze):
    kw = dict(combine_time_steps=STEPS, num_decoders=num_books, squeeze_single=squeeze)
    masks, log_probs, targets, _ = _inputs(num_books, squeeze)
    masks = torch.zeros_like(masks)
    nemo = NeMoMultiMLMLoss(**kw)(masks=masks, decoder_outputs=log_probs, targets=targets)
    assert torch.isnan(nemo)  # the defect we fix; if NeMo fixes it, this documents the change
    loss = MultiMLMLoss(**kw)(masks=masks, decoder_outputs=log_probs, targets=targets)
    assert loss.item() == 0.0
    loss.backward()  # still attached to the graph
    assert log_probs.grad is not None and torch.count_nonzero(log_probs.grad) == 0


def test_needs_labels_and_signature():
    assert MultiMLMLoss().needs_labels and MLMLoss().needs_labels
    assert isinstance(MultiMLMLoss(), NeMoMultiMLMLoss) and isinstance(MLMLoss(), NeMoMLMLoss)
    assert isinstance(MultiMLMLoss().mlm_loss, MLMLoss)


def test_mismatched_lengths_are_cut_to_common_length():
    """NeMo fails on a decoder output one frame longer than the masks; ours uses the common frames."""
    masks, log_probs, targets, _ = _inputs(1, True, mask_prob=0.9)
    longer = torch.cat([log_probs, log_probs[:, -1:]], dim=1).detach()
    ref = MLMLoss(STEPS, 0.8)(masks=masks, decoder_outputs=log_probs.detach(), targets=targets)
    got = MLMLoss(STEPS, 0.8)(masks=masks, decoder_outputs=longer, targets=targets)
    torch.testing.assert_close(got, ref)


def test_mask_length_not_multiple_of_steps_gets_a_partial_last_group():
    """Equal to masks zero-padded to a multiple of combine_time_steps (NeMo's reshape fails here)."""
    masks, log_probs, targets, _ = _inputs(1, True, mask_prob=0.9)
    masks[:, :, -STEPS:] = 1.0  # a fully masked last group: cut to 3 of 8 frames it is below threshold
    cut = masks[:, :, :-5]
    padded = torch.nn.functional.pad(cut, (0, 5))
    loss = MLMLoss(STEPS, 0.8)
    torch.testing.assert_close(loss(masks=cut, decoder_outputs=log_probs, targets=targets),
                               loss(masks=padded, decoder_outputs=log_probs, targets=targets))
    assert loss.frame_mask(cut).shape == (3, 12) and not loss.frame_mask(cut)[:, -1].any()
    assert loss.frame_mask(masks)[:, -1].all()


def test_without_masks_every_frame_counts():
    """NeMo's MLMLoss fails without masks (IndexError); ours averages the NLL over all frames."""
    _, log_probs, targets, _ = _inputs(1, True)
    got = MLMLoss(STEPS, 0.8)(decoder_outputs=log_probs, targets=targets)
    expected = torch.nn.functional.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), targets.reshape(-1))
    torch.testing.assert_close(got, expected)
