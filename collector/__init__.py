"""ptmon: SLA monitor for the 智联普陀 IoT sensors and community capture cameras of Putuo."""

__version__ = "0.1.0"
