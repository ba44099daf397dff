"""PIT SI-SDR loss against an independent brute-force permutation search (float64 numpy)."""
import itertools

import numpy as np
import pytest
import torch

from nest_ext.losses.pit_sisdr import PermutationInvariantSISDRLoss, pit_si_sdr, si_sdr_valid


def _si_sdr_np(est, ref, zero_mean):
    """SI-SDR written from its definition, independent of torchmetrics."""
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if zero_mean:
        est = est - est.mean()
        ref = ref - ref.mean()
    proj = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((proj @ proj) / ((est - proj) @ (est - proj)))


def _brute_force(est, ref, zero_mean):
    """Best mean SI-SDR over every permutation of the estimates, and that permutation."""
    speakers = est.shape[0]
    best, best_perm = -np.inf, None
    for perm in itertools.permutations(range(speakers)):
        value = np.mean([_si_sdr_np(est[perm[s]], ref[s], zero_mean) for s in range(speakers)])
        if value > best:
            best, best_perm = value, perm
    return best, list(best_perm)


def _mixed_estimates(batch, speakers, time, seed):
    """Estimates that are shuffled, noisy, leaky mixtures of the targets: the best permutation is not identity."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, speakers, time, generator=gen)
    est = torch.empty_like(target)
    for b in range(batch):
        perm = torch.randperm(speakers, generator=gen)
        leak = 0.3 * torch.rand(speakers, speakers, generator=gen)
        est[b] = target[b, perm] + leak @ target[b] + 0.2 * torch.randn(speakers, time, generator=gen) + 0.1
    return est, target


@pytest.mark.parametrize("speakers", [2, 3])
@pytest.mark.parametrize("zero_mean", [True, False])
def test_pit_matches_brute_force(speakers, zero_mean):
    est, target = _mixed_estimates(4, speakers, 500, seed=speakers)
    sdr, perm = pit_si_sdr(est, target, zero_mean=zero_mean)
    for b in range(4):
        want, want_perm = _brute_force(est[b].numpy(), target[b].numpy(), zero_mean)
        assert sdr[b].item() == pytest.approx(want, abs=1e-3)
        assert perm[b].tolist() == want_perm
    loss = PermutationInvariantSISDRLoss(zero_mean=zero_mean)(estimate=est, target=target)
    assert loss.item() == pytest.approx(-sdr.mean().item(), abs=1e-6)


@pytest.mark.parametrize("speakers", [2, 3])
def test_padding_does_not_change_the_loss(speakers):
    lengths = [500, 320, 500, 211]
    est, target = _mixed_estimates(len(lengths), speakers, 500, seed=10 + speakers)
    input_length = torch.tensor(lengths)
    loss_fn = PermutationInvariantSISDRLoss()
    padded = loss_fn(estimate=est, target=target, input_length=input_length)

    # Same utterances one by one, cut to their own lengths
    singles = [
        loss_fn(estimate=est[b : b + 1, :, :n], target=target[b : b + 1, :, :n]).item() for b, n in enumerate(lengths)
    ]
    assert padded.item() == pytest.approx(np.mean(singles), abs=1e-5)
    # And against the brute force on the valid samples
    brute = [-_brute_force(est[b, :, :n].numpy(), target[b, :, :n].numpy(), True)[0] for b, n in enumerate(lengths)]
    assert padded.item() == pytest.approx(np.mean(brute), abs=1e-3)

    # Whatever lies in the padding is ignored
    junk_est, junk_target = est.clone(), target.clone()
    for b, n in enumerate(lengths):
        junk_est[b, :, n:] = 100.0
        junk_target[b, :, n:] = -7.0
    again = loss_fn(estimate=junk_est, target=junk_target, input_length=input_length)
    assert again.item() == pytest.approx(padded.item(), abs=1e-6)


def test_gradient_stays_in_valid_region():
    est, target = _mixed_estimates(2, 2, 300, seed=5)
    est.requires_grad_(True)
    loss = PermutationInvariantSISDRLoss()(estimate=est, target=target, input_length=torch.tensor([300, 200]))
    loss.backward()
    assert est.grad[:, :, :200].abs().sum() > 0
    assert est.grad[1, :, 200:].abs().sum() == 0
    assert est.grad[0, :, 200:].abs().sum() > 0


def test_si_sdr_valid_and_shape_errors():
    est, target = _mixed_estimates(2, 2, 300, seed=6)
    values = si_sdr_valid(est, target, torch.tensor([300, 150]))
    assert values[1, 0].item() == pytest.approx(_si_sdr_np(est[1, 0, :150], target[1, 0, :150], True), abs=1e-3)
    with pytest.raises(ValueError, match="speaker count"):
        pit_si_sdr(est, target[:, :1])
    with pytest.raises(ValueError, match="non-positive"):
        pit_si_sdr(est, target, torch.tensor([300, 0]))


@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_inputs_are_scored_in_float32(autocast):
    """bf16 estimates (as a model gives under bf16 autocast) are scored in float32: no 0.125 dB steps near 20 dB."""
    gen = torch.Generator().manual_seed(7)
    target = torch.randn(3, 2, 4000, generator=gen)
    est = target + 0.1 * torch.randn(3, 2, 4000, generator=gen)  # about 20 dB
    est16, target16 = est.bfloat16().requires_grad_(True), target.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        sdr, perm = pit_si_sdr(est16, target16)
        loss = PermutationInvariantSISDRLoss()(estimate=est16, target=target16)
        mixture_sdr = si_sdr_valid(est16, target16)
    assert sdr.dtype == loss.dtype == mixture_sdr.dtype == torch.float32
    for b in range(3):  # reference: float64 on the same (bf16-rounded) samples
        ref, ref_perm = _brute_force(est16[b].detach().double().numpy(), target16[b].double().numpy(), True)
        assert 19 < ref < 21 and perm[b].tolist() == ref_perm
        assert sdr[b].item() == pytest.approx(ref, abs=1e-3)
        assert mixture_sdr[b, 0].item() == pytest.approx(_si_sdr_np(est16[b, 0].detach().double(), target16[b, 0].double(), True), abs=1e-3)
    loss.backward()
    assert est16.grad.dtype == torch.bfloat16 and torch.isfinite(est16.grad.float()).all()
