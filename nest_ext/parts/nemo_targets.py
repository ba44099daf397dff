"""Let NeMo instantiate ``nest_ext.*`` config ``_target_``s.

NeMo 3.0 builds ``_target_``s only under an allow-list of prefixes (``nemo.collections.``, ``torch.nn.``, ...),
so a ``.nemo`` or config naming ``nest_ext.modules.ConformerEncoder`` is refused until ``nest_ext.`` is on
that list. NeMo's own check that the class is a module/model/dataset subclass still applies; classes that
are none of those (Lightning callbacks in ``trainer.callbacks``) must be allowed one by one, by exact name.
Our models call this at import; a script that restores a ``.nemo`` containing nest_ext parts through a NeMo
class (e.g. ``EncDecCTCModelBPE.restore_from``) calls it first.

Example::

    from nest_ext.parts.nemo_targets import allow_nest_ext_targets
    allow_nest_ext_targets()
"""


def allow_nest_ext_targets(*exact_classes) -> None:
    """Allow ``nest_ext.*`` modules/models/datasets, and each class in ``exact_classes`` by its exact path."""
    from nemo.core.classes import common

    if "nest_ext." not in common.ALLOWED_TARGET_PREFIXES:
        common.ALLOWED_TARGET_PREFIXES.append("nest_ext.")
    for cls in exact_classes:
        common.ALLOWED_EXACT_CLASS_TARGETS.add(f"{cls.__module__}.{cls.__qualname__}")
