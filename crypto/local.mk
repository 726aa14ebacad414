# crypto/ build fragment
