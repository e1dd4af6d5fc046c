"""String options the MONAI way: a ``StrEnum`` per option and :func:`monai.utils.look_up_option`."""

from __future__ import annotations

import enum
from typing import TypeVar

from monai.utils import look_up_option

__all__ = ["look_up"]

E = TypeVar("E", bound=enum.Enum)


def look_up(name: str, value: str | E, options: type[E]) -> E:
    """The member of ``options`` that ``value`` names, with the option's ``name`` in any error.

    Parameters
    ----------
    name : str
        The argument or config field being checked (e.g. ``"scope"``), for the error message.
    value : str or enum member
        The value given (a member's string value, or a member).
    options : type of enum.Enum
        The ``StrEnum`` listing the accepted values.

    Returns
    -------
    enum.Enum
        The matching member of ``options``.

    Raises
    ------
    ValueError
        ``"<name>: "`` followed by MONAI's message, which names the value, lists the available
        options and suggests the closest one for a near miss.
    """
    try:
        return look_up_option(value, options)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
