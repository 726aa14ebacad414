# src/ mesh build fragment
