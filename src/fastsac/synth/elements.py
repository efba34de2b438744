"""Element table for the simulator: atomic number and nearest-neighbour bond length.

HAADF (Z-contrast) intensity of an isolated atom grows roughly as Z^1.7
(Rutherford-like scattering screened by the electron cloud; exponents of
1.6–1.9 are reported, Pennycook & Jesson 1991; Krivanek et al. 2010), so the
integrated intensity of an atom relative to Pt is ``(Z / 78) ** z_exponent``.
Bond lengths are metallic nearest-neighbour distances of the bulk element
(nm), used for dimers, trimers and nanocluster rafts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Element", "ELEMENTS", "element"]


@dataclass(frozen=True)
class Element:
    symbol: str
    z: int
    bond_nm: float


# symbol: (Z, nearest-neighbour distance in the bulk metal / covalent bond, nm)
_TABLE = {
    "C": (6, 0.142), "N": (7, 0.140), "O": (8, 0.140), "Si": (14, 0.235), "S": (16, 0.205),
    "Ti": (22, 0.289), "V": (23, 0.262), "Cr": (24, 0.250), "Mn": (25, 0.273),
    "Fe": (26, 0.248), "Co": (27, 0.250), "Ni": (28, 0.249), "Cu": (29, 0.256),
    "Zn": (30, 0.266), "Ga": (31, 0.270), "Ge": (32, 0.245), "Y": (39, 0.355),
    "Zr": (40, 0.318), "Nb": (41, 0.286), "Mo": (42, 0.272), "Ru": (44, 0.265),
    "Rh": (45, 0.269), "Pd": (46, 0.275), "Ag": (47, 0.289), "Cd": (48, 0.298),
    "In": (49, 0.325), "Sn": (50, 0.302), "La": (57, 0.373), "Ce": (58, 0.365),
    "Gd": (64, 0.357), "Hf": (72, 0.313), "Ta": (73, 0.286), "W": (74, 0.274),
    "Re": (75, 0.274), "Os": (76, 0.268), "Ir": (77, 0.271), "Pt": (78, 0.277),
    "Au": (79, 0.288), "Hg": (80, 0.300), "Pb": (82, 0.350), "Bi": (83, 0.309),
}

ELEMENTS: dict[str, Element] = {s: Element(s, z, b) for s, (z, b) in _TABLE.items()}


def element(symbol: str) -> Element:
    """Look up an element by symbol (case-insensitive), raising a helpful ValueError."""
    key = {s.lower(): s for s in ELEMENTS}.get(str(symbol).strip().lower())
    if key is None:
        import difflib

        close = difflib.get_close_matches(str(symbol), list(ELEMENTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"elements: unknown element {symbol!r}; known: {', '.join(ELEMENTS)}{hint}")
    return ELEMENTS[key]
