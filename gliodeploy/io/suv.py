"""Body-weight SUV arithmetic shared by the NIfTI (BIDS-PET) and DICOM readers.

SUVbw = C[Bq/mL] * W[g] / (D_inj[Bq] * 2^(-dt / T_half)), dt = image reference time - injection time.
The image is decay-corrected to its reference time (DICOM ``DecayCorrection`` START = series start;
BIDS ``ImageDecayCorrectionTime``), so the injected dose is decayed to that same time. 1 mL of tissue
is taken as 1 g, as every SUV definition does.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta

from gliodeploy.errors import SuvError

#: Physical half-lives in seconds (NNDC / DICOM PS3.16 CID 4020 values used by scanners).
HALF_LIVES_S: dict[str, float] = {
    "F18": 6586.2,
    "C11": 1223.4,
    "N13": 597.9,
    "O15": 122.24,
    "GA68": 4062.6,
    "RB82": 75.45,
    "CU64": 45723.6,
    "ZR89": 282276.0,
}

#: Activity units -> Bq (BIDS ``InjectedRadioactivityUnits``).
ACTIVITY_UNITS_BQ: dict[str, float] = {
    "bq": 1.0,
    "kbq": 1e3,
    "mbq": 1e6,
    "gbq": 1e9,
    "uci": 3.7e4,
    "µci": 3.7e4,
    "mci": 3.7e7,
    "ci": 3.7e10,
}

#: Concentration units -> Bq/mL (BIDS ``Units``), in the spelling :func:`normalize_concentration_units` gives.
CONCENTRATION_UNITS_BQML: dict[str, float] = {
    "bq/ml": 1.0,
    "kbq/ml": 1e3,
    "mbq/ml": 1e6,
    "nci/ml": 37.0,
    "uci/ml": 3.7e4,
    "µci/ml": 3.7e4,
}

#: Units meaning the image already holds SUVbw (DICOM GML, some BIDS exports).
SUV_UNITS: frozenset[str] = frozenset({"g/ml", "suv", "suvbw", "gml"})

#: Plausible ranges: outside them the value is almost surely in the wrong unit.
WEIGHT_RANGE_KG: tuple[float, float] = (0.5, 500.0)
DOSE_RANGE_BQ: tuple[float, float] = (1e5, 1e11)


def half_life_for(radionuclide: str) -> float:
    """Half-life (s) of a radionuclide written ``F18``, ``18F``, ``F-18``, ``[18F]`` or ``^18^Fluorine``."""
    text = radionuclide.strip()
    names = {
        "fluorine": "F",
        "carbon": "C",
        "nitrogen": "N",
        "oxygen": "O",
        "gallium": "Ga",
        "rubidium": "Rb",
    }
    names |= {"copper": "Cu", "zirconium": "Zr"}
    for name, symbol in names.items():
        text = re.sub(name, symbol, text, flags=re.IGNORECASE)
    letters = "".join(re.findall(r"[A-Za-z]+", text)).upper()
    digits = "".join(re.findall(r"\d+", text))
    key = f"{letters}{digits}"
    if key not in HALF_LIVES_S:
        known = ", ".join(sorted(HALF_LIVES_S))
        raise SuvError(
            f"unknown radionuclide {radionuclide!r} (known: {known}); give its half-life explicitly"
        )
    return HALF_LIVES_S[key]


def activity_to_bq(value: float, units: str, *, field: str) -> float:
    """Convert an activity in ``units`` (MBq, mCi, ...) to Bq; ``field`` names the source in errors."""
    factor = ACTIVITY_UNITS_BQ.get(units.strip().lower().replace("μ", "µ"))
    if factor is None:
        raise SuvError(
            f"{field}: unknown activity unit {units!r} (expected one of {sorted(ACTIVITY_UNITS_BQ)})"
        )
    return float(value) * factor


def normalize_concentration_units(units: str) -> str:
    """Lower-cased canonical spelling of a concentration unit: ``BQML``, ``Bq/ml``, ``Bq.mL-1`` -> ``bq/ml``.

    dcm2niix copies DICOM's code ``BQML`` into the BIDS sidecar; hand-written sidecars use ``Bq/mL``,
    ``Bq/cc`` or the UCUM-like ``Bq.mL-1``/``Bq mL^-1``. All mean Bq per millilitre.
    """
    key = re.sub(r"\s+", "", units.strip().lower().replace("μ", "µ").replace("cc", "ml"))
    key = re.sub(r"[.*·]?ml\^?-1$", "/ml", key)  # "per mL" written as a negative power
    match = re.fullmatch(r"([kmnuµ]?(?:bq|ci))ml", key)  # the DICOM-style code without the slash
    return f"{match.group(1)}/ml" if match else key


def concentration_scale(units: str, *, field: str) -> float | None:
    """Factor from ``units`` to Bq/mL, or ``None`` when the units already mean SUV (g/mL).

    Spellings are normalised first (:func:`normalize_concentration_units`); unknown units are a
    :class:`SuvError` naming ``field``.
    """
    key = normalize_concentration_units(units)
    if key in SUV_UNITS:
        return None
    factor = CONCENTRATION_UNITS_BQML.get(key)
    if factor is None:
        expected = sorted(CONCENTRATION_UNITS_BQML) + sorted(SUV_UNITS)
        raise SuvError(
            f"{field}: image units {units!r} are not an activity concentration (expected {expected})"
        )
    return factor


def check_weight(weight_kg: float | None, *, field: str, hint: str) -> float:
    """Return a plausible body weight in kg or raise :class:`SuvError` naming ``field``."""
    if weight_kg is None or not math.isfinite(weight_kg) or weight_kg <= 0:
        state = "missing" if weight_kg is None else f"invalid ({weight_kg!r})"
        raise SuvError(f"{field} is {state}: {hint}")
    low, high = WEIGHT_RANGE_KG
    if not low <= weight_kg <= high:
        raise SuvError(
            f"{field} = {weight_kg} kg is implausible (expected {low}-{high} kg; grams or pounds?)"
        )
    return float(weight_kg)


def check_dose(dose_bq: float | None, *, field: str, hint: str) -> float:
    """Return a plausible injected activity in Bq or raise :class:`SuvError` naming ``field``."""
    if dose_bq is None or not math.isfinite(dose_bq) or dose_bq <= 0:
        state = "missing" if dose_bq is None else f"invalid ({dose_bq!r})"
        raise SuvError(f"{field} is {state}: {hint}")
    low, high = DOSE_RANGE_BQ
    if not low <= dose_bq <= high:
        raise SuvError(f"{field} = {dose_bq:g} Bq is implausible (expected {low:g}-{high:g} Bq; wrong unit?)")
    return float(dose_bq)


def compute_suv_factor(
    *, weight_kg: float, injected_dose_bq: float, decay_time_s: float, half_life_s: float
) -> float:
    """Factor f such that SUVbw = f * C[Bq/mL].

    ``decay_time_s`` is the time from injection to the image's decay-correction reference (0 when the
    image is decay-corrected to the injection time). Raises :class:`SuvError` for values that cannot
    give an SUV (missing, zero, negative time: scan before injection).
    """
    weight_kg = check_weight(weight_kg, field="weight", hint="body weight in kg is required for SUVbw")
    injected_dose_bq = check_dose(
        injected_dose_bq, field="injected dose", hint="injected activity is required"
    )
    if half_life_s is None or not math.isfinite(half_life_s) or half_life_s <= 0:
        raise SuvError(f"half-life must be a positive number of seconds, got {half_life_s!r}")
    if decay_time_s is None or not math.isfinite(decay_time_s):
        raise SuvError(f"decay time must be a finite number of seconds, got {decay_time_s!r}")
    if decay_time_s < 0:
        raise SuvError(
            f"the image reference time is {-decay_time_s:.0f} s before the injection: check the injection "
            "and scan times (or their dates)"
        )
    if decay_time_s > 20 * half_life_s:
        raise SuvError(
            f"{decay_time_s:.0f} s between injection and scan is more than 20 half-lives ({half_life_s} s): "
            "check the injection and scan dates"
        )
    decayed_dose = injected_dose_bq * 2.0 ** (-decay_time_s / half_life_s)
    return weight_kg * 1000.0 / decayed_dose


TimeLike = datetime | time

#: Where an SUV input came from (``PetVolume.metadata["suv_facts"][name]["source"]``): a DICOM tag, the
#: BIDS-PET sidecar, participants.tsv / sub-X_sessions.tsv, an explicit argument (the command-line option
#: for the CLIs), or derived from the others.
FACT_SOURCES: tuple[str, ...] = (
    "dicom",
    "bids_sidecar",
    "participants_tsv",
    "sessions_tsv",
    "argument",
    "derived",
)

#: The option (and ``load_pet`` argument) that overrides each fact, named in ``argument`` sources.
ARGUMENT_NAMES: dict[str, str] = {
    "units": "--units (image_units)",
    "weight_kg": "--weight (weight_kg)",
    "injected_dose_bq": "--dose (injected_dose_bq)",
    "injection_time": "--injection-time (injection_time)",
    "scan_time": "--scan-time (scan_time)",
    "half_life_s": "--radionuclide (half_life_s)",
    "assume_suv": "--assume-suv (assume_suv)",
}


def fact(value: object, source: str, detail: str) -> dict[str, object]:
    """One SUV input for the audit trail: its value, the kind of source (:data:`FACT_SOURCES`) and
    the exact place (file and field, DICOM tag, option)."""
    if source not in FACT_SOURCES:
        raise ValueError(f"unknown fact source {source!r}")
    if isinstance(value, datetime | time):
        value = value.isoformat()
    return {"value": value, "source": source, "detail": detail}


def argument_fact(name: str, value: object) -> dict[str, object]:
    """A fact given explicitly by the caller (:data:`ARGUMENT_NAMES` says which option)."""
    return fact(value, "argument", ARGUMENT_NAMES[name])


def derived_facts(decay_time_s: float, half_life_s: float, factor: float) -> dict[str, dict[str, object]]:
    """The facts computed from the inputs: decay time, decay factor 2^(-dt/T) and the SUV factor."""
    return {
        "decay_time_s": fact(decay_time_s, "derived", "reference time - injection time"),
        "decay_factor": fact(
            2.0 ** (-decay_time_s / half_life_s), "derived", "2^(-decay_time_s/half_life_s)"
        ),
        "suv_factor": fact(factor, "derived", "SUVbw = value x factor"),
    }


def parse_time(value: str | datetime | time | None, *, field: str) -> TimeLike | None:
    """Parse an ISO ``YYYY-MM-DDTHH:MM:SS`` date-time or an ``HH:MM:SS`` clock time (``None`` passes)."""
    if value is None or isinstance(value, datetime | time):
        return value
    text = str(value).strip()
    if text[-1:] in ("Z", "z"):  # UTC suffix: fromisoformat reads it only from Python 3.11 on
        text = text[:-1] + "+00:00"
    for parser in (datetime.fromisoformat, time.fromisoformat):
        try:
            parsed = parser(text)
        except ValueError:
            continue
        return parsed.replace(tzinfo=None)
    raise SuvError(
        f"{field} {value!r} is not an ISO date-time (YYYY-MM-DDTHH:MM:SS) or clock time (HH:MM:SS)"
    )


def decay_seconds(injection: TimeLike, reference: TimeLike) -> float:
    """Seconds from ``injection`` to the image's decay-correction ``reference``.

    A clock time without a date takes the other value's date; when that puts the injection after the
    reference, the injection was the day before (a scan just after midnight), as in the QIBA rules.
    """
    if isinstance(injection, datetime) and isinstance(reference, datetime):
        return (reference - injection).total_seconds()
    if isinstance(reference, datetime):
        inj = datetime.combine(reference.date(), injection)
        return (reference - (inj - timedelta(days=1) if inj > reference else inj)).total_seconds()
    if isinstance(injection, datetime):
        ref = datetime.combine(injection.date(), reference)
        return ((ref + timedelta(days=1) if ref < injection else ref) - injection).total_seconds()
    day = date(2000, 1, 1)
    seconds = (datetime.combine(day, reference) - datetime.combine(day, injection)).total_seconds()
    return seconds + 86400.0 if seconds < 0 else seconds
