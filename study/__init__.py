"""memscale: how much memory length does each sequence architecture buy per unit of compute?"""

__version__ = "0.1.0"
