"""vetgateway: a lab and device integration gateway for veterinary clinics."""

__version__ = "0.1.0"
